"""Small bounded collections for state kept about other peers: nothing a stranger sends grows without bound."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class BoundedSet:
    """A set that forgets its oldest members beyond ``max_items`` and members older than ``ttl`` seconds.

    ``add`` returns True when the item was not (or no longer) present. Times are passed in, so it works on trio's
    clock as well as on wall time."""

    def __init__(self, max_items: int, ttl: float):
        if max_items < 1 or ttl <= 0:
            raise ValueError("max_items must be >= 1 and ttl > 0")
        self.max_items = max_items
        self.ttl = ttl
        self._items: OrderedDict[Hashable, float] = OrderedDict()  # item -> time added, oldest first

    def _expire(self, now: float) -> None:
        while self._items:
            item, added = next(iter(self._items.items()))
            if now - added <= self.ttl and len(self._items) <= self.max_items:
                break
            del self._items[item]

    def add(self, item: Hashable, now: float) -> bool:
        """Remember ``item``; True if it was new."""
        self._expire(now)
        if item in self._items:
            return False
        self._items[item] = now
        self._expire(now)
        return True

    def discard(self, item: Hashable) -> None:
        """Forget ``item`` if present."""
        self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)


class RateLimit:
    """At most ``limit`` events per ``period`` seconds (a fixed window); ``suppressed`` counts the rest."""

    def __init__(self, limit: int, period: float):
        self.limit = limit
        self.period = period
        self._window_start = float("-inf")
        self._count = 0
        self.suppressed = 0  # events refused since the last one allowed was reported (see take_suppressed)

    def allow(self, now: float) -> bool:
        """Whether one more event may happen now."""
        if now - self._window_start >= self.period:
            self._window_start, self._count = now, 0
        if self._count < self.limit:
            self._count += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        """How many events were refused since the last call (to report them in one line)."""
        count, self.suppressed = self.suppressed, 0
        return count
