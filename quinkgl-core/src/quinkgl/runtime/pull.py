"""The pieces of the pull round protocol (docs/runtime.md, "A round"): the request message, the adaptive
deadline learned from answer times, and the memory of sources that did not answer.

A peer asks its sources for their model of a round with a small JSON request; the answer is the source's wire
update (:mod:`quinkgl.wire`). Everything here is pure Python and transport-neutral.
"""

from __future__ import annotations

import collections
import json
import statistics

from quinkgl.transport import MAX_REQUEST_BYTES, RequestRefused

REQUEST_VERSION = 1
NEWEST = 0  # a request for round 0 asks for the source's newest model (a late joiner catching up)
DEADLINE_FLOOR_S = 2.0
DEADLINE_MAD_FACTOR = 4.0
DEADLINE_MIN_SAMPLES = 1  # before the first observed answer the round waits up to --gossip-interval
DEADLINE_WINDOW = 64  # answer times remembered
MAX_AVOID_ROUNDS = 16


WAIT_SHARE = 0.75  # a source waits for the asked round at most this share of the requester's time left


def encode_request(*, swarm_id: str, round_idx: int, wait: float) -> bytes:
    """The request a peer sends a source: "your model of round ``round_idx`` (or newer); if you are still
    training it, wait at most ``wait`` seconds, then send your newest"."""
    doc = {"v": REQUEST_VERSION, "swarm_id": swarm_id, "round": round_idx, "wait": round(max(0.0, wait), 3)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def parse_request(raw: bytes, *, swarm_id: str) -> tuple[int, float]:
    """The round a request asks for and how long the requester lets us wait for it; raises
    :class:`RequestRefused` (``bad_request`` / ``other_swarm``)."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestRefused("bad_request", f"{len(raw)} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestRefused("bad_request", "not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != REQUEST_VERSION:
        raise RequestRefused("bad_request", "not a version-1 request")
    if doc.get("swarm_id") != swarm_id:
        raise RequestRefused("other_swarm")
    round_idx = doc.get("round")
    if type(round_idx) is not int or round_idx < 0:
        raise RequestRefused("bad_request", "round must be a non-negative integer")
    wait = doc.get("wait", 0.0)
    if type(wait) not in (int, float) or not 0 <= wait < float("inf"):
        raise RequestRefused("bad_request", "wait must be a non-negative number of seconds")
    return round_idx, float(wait)


class AnswerTimes:
    """Seconds from "asked" to "answered" of recent sources, and the deadline they suggest.

    The deadline is ``median + 4·MAD`` of the recent answer times, at least :data:`DEADLINE_FLOOR_S`; before any
    answer was observed there is no learned deadline (``None``: wait up to the cap).
    """

    def __init__(self) -> None:
        self._seconds: collections.deque[float] = collections.deque(maxlen=DEADLINE_WINDOW)

    def observe(self, seconds: float) -> None:
        self._seconds.append(max(0.0, seconds))

    def deadline(self) -> float | None:
        if len(self._seconds) < DEADLINE_MIN_SAMPLES:
            return None
        median = statistics.median(self._seconds)
        mad = statistics.median(abs(s - median) for s in self._seconds)
        return max(DEADLINE_FLOOR_S, median + DEADLINE_MAD_FACTOR * mad)


class Avoided:
    """Sources that accepted a request and missed the deadline: skipped for 1, 2, 4 … rounds (at most 16)."""

    def __init__(self) -> None:
        self._strikes: dict[str, int] = {}
        self._until: dict[str, int] = {}

    def missed(self, peer_id: str, round_idx: int) -> None:
        strikes = self._strikes[peer_id] = self._strikes.get(peer_id, 0) + 1
        self._until[peer_id] = round_idx + min(2 ** (strikes - 1), MAX_AVOID_ROUNDS)

    def answered(self, peer_id: str) -> None:
        self._strikes.pop(peer_id, None)
        self._until.pop(peer_id, None)

    def avoids(self, peer_id: str, round_idx: int) -> bool:
        until = self._until.get(peer_id)
        return until is not None and until >= round_idx

    def forget(self, peer_id: str) -> None:
        self.answered(peer_id)
