"""The conditions a simulated swarm runs under (``quinkgl simulate``): message drops, a latency distribution, peer
churn and slow peers — the conditions gossip learning is studied under (gossipy, GoLF) — and the announcement
overlay that keeps a simulated peer's traffic independent of the swarm's size.

Everything here is pure Python and seeded: the same flags and ``--seed`` give the same drops, delays, departures
and slow peers (up to the event loop's interleaving). The memory transport applies :class:`Network` to every
message; the round loop asks :class:`PeerConditions` before each round (churn) and after local training (speed).
"""

from __future__ import annotations

import math
import random
import re
from typing import Any

import attrs

from quinkgl.errors import QuinkGLError

ANNOUNCE_DEGREE = 16  # announcement neighbours per simulated peer (a symmetric random overlay); all when fewer
_NUMBER = r"(\d+(\.\d*)?|\.\d+)"


def _float(text: str, flag: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise QuinkGLError(f"{flag} expects {expected}; got {text!r}") from None
    if not math.isfinite(value):
        raise QuinkGLError(f"{flag} expects {expected}; got {text!r}")
    return value


@attrs.frozen
class Latency:
    """A one-way message delay distribution, in seconds: ``none``, ``fixed:S``, ``uniform:LO:HI``, ``exp:MEAN``
    or ``lognormal:MEDIAN:SIGMA``."""

    kind: str = "none"
    a: float = 0.0
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        if self.kind == "lognormal":
            return rng.lognormvariate(math.log(self.a), self.b) if self.a > 0 else 0.0
        return 0.0

    def __str__(self) -> str:
        if self.kind in ("none",):
            return "none"
        if self.kind in ("fixed", "exp"):
            return f"{self.kind}:{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


LATENCY_HELP = "none, fixed:S, uniform:LO:HI, exp:MEAN or lognormal:MEDIAN:SIGMA (seconds, one way)"


def parse_latency(text: str) -> Latency:
    """``--latency``: see :data:`LATENCY_HELP`; raises :class:`QuinkGLError` with the accepted forms."""
    flag = "--latency"
    kind, _, rest = text.strip().partition(":")
    parts = rest.split(":") if rest else []
    shapes = {"none": 0, "fixed": 1, "exp": 1, "uniform": 2, "lognormal": 2}
    if kind not in shapes or len(parts) != shapes[kind]:
        raise QuinkGLError(f"{flag} must be {LATENCY_HELP}; got {text!r}")
    values = [_float(p, flag, LATENCY_HELP) for p in parts]
    if any(v < 0 for v in values):
        raise QuinkGLError(f"{flag}: seconds must not be negative; got {text!r}")
    if kind == "uniform" and values[0] > values[1]:
        raise QuinkGLError(f"{flag} uniform:LO:HI needs LO <= HI; got {text!r}")
    if any(v > 60 for v in values):
        raise QuinkGLError(f"{flag}: at most 60 seconds per parameter; got {text!r}")
    return Latency(kind, *values)


def parse_probability(text: str | float, flag: str, *, allow_one: bool = False) -> float:
    """A probability in [0, 1) (or [0, 1] with ``allow_one``)."""
    expected = "a probability in [0, 1]" if allow_one else "a probability in [0, 1)"
    value = _float(str(text), flag, expected)
    if not (0.0 <= value <= 1.0) or (value == 1.0 and not allow_one):
        raise QuinkGLError(f"{flag} expects {expected}; got {text!r}")
    return value


def parse_churn(text: str) -> tuple[float, float]:
    """``--churn LEAVE:REJOIN``: each round an online peer leaves with probability LEAVE (in [0, 1)) and an
    offline one comes back with probability REJOIN (in (0, 1])."""
    match = re.fullmatch(rf"{_NUMBER}:{_NUMBER}", text.strip())
    if not match:
        raise QuinkGLError(f"--churn must be LEAVE:REJOIN, two per-round probabilities (e.g. 0.1:0.5); got {text!r}")
    leave = parse_probability(match.group(1), "--churn LEAVE")
    rejoin = parse_probability(match.group(3), "--churn REJOIN", allow_one=True)
    if rejoin == 0:
        raise QuinkGLError("--churn REJOIN must be > 0 (a peer that never comes back is not churn)")
    return leave, rejoin


def parse_slow(text: str) -> tuple[float, float]:
    """``--slow-peers FRACTION:FACTOR``: that share of the peers trains FACTOR (>= 1) times slower."""
    match = re.fullmatch(rf"{_NUMBER}:{_NUMBER}", text.strip())
    if not match:
        raise QuinkGLError(f"--slow-peers must be FRACTION:FACTOR (e.g. 0.2:4); got {text!r}")
    fraction = parse_probability(match.group(1), "--slow-peers FRACTION", allow_one=True)
    factor = _float(match.group(3), "--slow-peers FACTOR", "a number >= 1")
    if not 1.0 <= factor <= 100.0:
        raise QuinkGLError(f"--slow-peers FACTOR must be between 1 and 100; got {text!r}")
    return fraction, factor


@attrs.frozen(kw_only=True)
class Conditions:
    """The per-run conditions of a simulation (all off by default)."""

    drop: float = 0.0  # probability that any one message (announcement, request, answer) is lost
    latency: Latency = Latency()
    churn_leave: float = 0.0  # per round, the probability that an online peer goes offline
    churn_rejoin: float = 1.0  # per round, the probability that an offline peer comes back
    slow_fraction: float = 0.0  # the share of the peers that are slow
    slow_factor: float = 1.0  # how many times slower they train

    @property
    def any(self) -> bool:
        return bool(self.drop or self.latency.kind != "none" or self.churn_leave or self.slow_fraction)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "latency": str(self.latency),
            "churn": {"leave": self.churn_leave, "rejoin": self.churn_rejoin},
            "slow_peers": {"fraction": self.slow_fraction, "factor": self.slow_factor},
        }

    def speeds(self, peers: int, seed: int) -> list[float]:
        """Each peer's speed factor (1 = normal): ``round(slow_fraction · peers)`` peers, drawn with the seed."""
        count = round(self.slow_fraction * peers)
        slow = set(random.Random(f"{seed}:slow").sample(range(peers), count)) if count else set()
        return [self.slow_factor if i in slow else 1.0 for i in range(peers)]


class Network:
    """Message drops and delays shared by every memory transport of one simulated swarm."""

    def __init__(self, conditions: Conditions, seed: int):
        self.drop = conditions.drop
        self.latency = conditions.latency
        self.rng = random.Random(f"{seed}:network")
        self.dropped = 0

    def lost(self) -> bool:
        """Whether the next message is dropped (counted)."""
        if self.drop and self.rng.random() < self.drop:
            self.dropped += 1
            return True
        return False

    def delay(self) -> float:
        return self.latency.sample(self.rng)


def announce_overlay(node_ids: list[str], degree: int, seed: int) -> dict[str, frozenset[str]]:
    """Who hears whose announcements: a symmetric random graph where each peer has about ``degree`` neighbours
    (the union of ``degree // 2`` random Hamiltonian cycles: connected, an expander with high probability); every
    peer hears every other when the swarm has at most ``degree + 1`` peers."""
    n = len(node_ids)
    if n <= degree + 1:
        everyone = frozenset(node_ids)
        return {node: everyone - {node} for node in node_ids}
    rng = random.Random(f"{seed}:overlay")
    links: dict[str, set[str]] = {node: set() for node in node_ids}
    for _ in range(max(1, degree // 2)):
        cycle = list(node_ids)
        rng.shuffle(cycle)
        for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            links[a].add(b)
            links[b].add(a)
    return {node: frozenset(others) for node, others in links.items()}


@attrs.define
class PeerConditions:
    """One simulated peer's churn and speed: the runtime asks :meth:`before_round` and :meth:`after_train`."""

    speed: float = 1.0
    leave: float = 0.0
    rejoin: float = 1.0
    rng: random.Random = attrs.field(factory=random.Random)
    online: bool = True
    offline_rounds: int = 0
    departures: int = 0
    _round_seconds: float = 1.0

    async def before_round(self, peer: Any, round_idx: int) -> bool:
        """Churn: True when the peer runs this round; False when it is offline for it (it then stays away about
        one round's time, unreachable, and neither announces nor hears announcements). A peer coming back more
        than the staleness bound behind the swarm catches up first (the runtime's late-joiner path)."""
        import trio

        back = False
        if self.online and self.leave and self.rng.random() < self.leave:
            self.online = False
            self.departures += 1
        elif not self.online and self.rng.random() < self.rejoin:
            self.online = back = True
        peer.p.transport.set_online(self.online)
        if back:
            # As a restarted `quinkgl run` peer does: far behind the swarm, first average the newest models of
            # the peers it still knows, and train on from there.
            await peer._catch_up()
        if self.online:
            return True
        self.offline_rounds += 1
        if peer.history:
            self._round_seconds = max(0.05, float(peer.history[-1].get("round_seconds") or 0.0))
        await trio.sleep(self._round_seconds)
        return False

    async def after_train(self, peer: Any, seconds: float) -> None:
        """A slow peer takes ``speed`` times as long for its local training."""
        if self.speed > 1.0:
            import trio

            await trio.sleep((self.speed - 1.0) * seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "speed": self.speed,
            "online": self.online,
            "offline_rounds": self.offline_rounds,
            "departures": self.departures,
        }
