"""The bounded inbox: the newest update per sender, stale ones dropped with a counted reason."""

from __future__ import annotations

import threading
from typing import Optional

from quinkgl.aggregation import ModelUpdate


class Inbox:
    """Holds at most one update per sender (the newest round wins)."""

    def __init__(self) -> None:
        self._updates: dict[str, ModelUpdate] = {}
        self._lock = threading.Lock()

    def offer(self, update: ModelUpdate, min_round: int) -> Optional[str]:
        """Keep ``update`` unless it is stale; returns the rejection reason, or None when kept."""
        if update.round < min_round:
            return "stale_round"
        with self._lock:
            current = self._updates.get(update.sender)
            if current is not None and current.round > update.round:
                return "older_than_held"
            self._updates[update.sender] = update
        return None

    def take(self, min_round: int) -> tuple[list[ModelUpdate], int]:
        """Remove and return the updates of round >= ``min_round`` (sorted by sender) and how many were stale."""
        with self._lock:
            held, self._updates = self._updates, {}
        fresh = [u for u in held.values() if u.round >= min_round]
        return sorted(fresh, key=lambda u: u.sender), len(held) - len(fresh)
