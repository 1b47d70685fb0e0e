"""Network bounds of the libp2p transport: what one stranger can make a peer hold, parse, dial or log.

Every number here is documented in ``docs/security.md`` ("Network bounds (libp2p transport)"). They are
machine-local (not swarm-wide protocol settings), so they come from ``TransportConfig.options`` under the
same names (tests use small values); :meth:`NetworkLimits.from_options` ignores unknown keys.

Also here: the token buckets behind the rate limits (bounded, least-recently-used maps of them), the address
scope rule for dialling, and a logging filter that rate-limits repeated lines. Pure Python: no libp2p import.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

import attrs

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@attrs.frozen(kw_only=True)
class NetworkLimits:
    """The bounds (see the module docstring). Rates are per second; bursts are the bucket sizes."""

    # Announcements, checked before the envelope is parsed.
    announce_per_forwarder_rate: float = 100.0  # messages/s one connected peer may hand us (all origins together)
    announce_per_forwarder_burst: float = 300.0
    announce_per_forwarder_bytes_rate: float = 1024 * 1024.0
    announce_per_forwarder_bytes_burst: float = 4 * 1024 * 1024.0
    announce_per_origin_rate: float = 20.0  # messages/s from one signing peer, whoever forwards them
    announce_per_origin_burst: float = 120.0
    announce_per_origin_bytes_rate: float = 128 * 1024.0
    announce_per_origin_bytes_burst: float = 512 * 1024.0
    announce_max_age_s: float = 120.0  # an announcement sent longer ago (by its signed send time) is stale
    announce_max_future_s: float = 120.0  # ... or sent this far in the future (clock skew allowed)
    max_tracked_origins: int = 1024  # per-origin state (counters, buckets, address book entries)
    max_tracked_forwarders: int = 256
    # Dialling announced addresses.
    dial_budget: int = 16  # dials to announced addresses per dial window
    dial_window_s: float = 10.0
    dial_addrs_per_peer: int = 3  # addresses tried per peer per attempt
    dial_negative_ttl_s: float = 60.0  # a failed address is not redialled for this long (whoever announces it)
    dial_peer_negative_ttl_s: float = 30.0  # a peer none of whose addresses answered
    max_negative_entries: int = 4096
    # Inbound model transfers.
    inbound_max_concurrent: int = 16  # transfers being received at once, all peers together
    inbound_max_buffered_bytes: int = 256 * 1024 * 1024  # payload bytes held by transfers in progress
    inbound_header_deadline_s: float = 10.0  # the 48-byte header must arrive within this
    inbound_min_rate: float = 64 * 1024.0  # bytes/s a transfer must average after the grace period
    inbound_grace_s: float = 10.0
    # Logging.
    log_lines_per_minute: int = 10  # per repeated message (libp2p's and ours); the rest are counted, summarised

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> NetworkLimits:
        """Limits with any ``options[name]`` (for a field name) overriding the default."""
        fields = {f.name: f for f in attrs.fields(cls)}
        values: dict[str, Any] = {}
        for name, field in fields.items():
            if name in options:
                value = options[name]
                values[name] = int(value) if field.type in (int, "int") else float(value)
        return cls(**values)


class TokenBucket:
    """A token bucket: ``rate`` tokens/s up to ``burst``; :meth:`take` spends ``n`` if available."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, n: float, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class BoundedMap(Generic[K, V]):
    """A map holding at most ``capacity`` entries; the least recently used one is dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> list[K]:
        """Store ``value``; return the keys evicted to make room."""
        self._data[key] = value
        self._data.move_to_end(key)
        evicted: list[K] = []
        while len(self._data) > self.capacity:
            old, _ = self._data.popitem(last=False)
            evicted.append(old)
        return evicted

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class RateLimiter:
    """Message and byte buckets per key, for at most ``capacity`` keys (LRU)."""

    def __init__(self, *, rate: float, burst: float, bytes_rate: float, bytes_burst: float, capacity: int) -> None:
        self.rate, self.burst = rate, burst
        self.bytes_rate, self.bytes_burst = bytes_rate, bytes_burst
        self._buckets: BoundedMap[Hashable, tuple[TokenBucket, TokenBucket]] = BoundedMap(capacity)

    def allow(self, key: Hashable, size: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        pair = self._buckets.get(key)
        if pair is None:
            pair = (TokenBucket(self.rate, self.burst, now), TokenBucket(self.bytes_rate, self.bytes_burst, now))
            self._buckets.put(key, pair)
        messages, volume = pair
        # Check both before spending either, so a refusal costs nothing.
        messages.tokens = min(messages.burst, messages.tokens + (now - messages.stamp) * messages.rate)
        messages.stamp = now
        volume.tokens = min(volume.burst, volume.tokens + (now - volume.stamp) * volume.rate)
        volume.stamp = now
        if messages.tokens < 1 or volume.tokens < size:
            return False
        messages.tokens -= 1
        volume.tokens -= size
        return True

    def __len__(self) -> int:
        return len(self._buckets)


class ExpiringSet:
    """Keys remembered until an expiry time, at most ``capacity`` of them (negative caches)."""

    def __init__(self, capacity: int) -> None:
        self._until: BoundedMap[Hashable, float] = BoundedMap(capacity)

    def add(self, key: Hashable, ttl_s: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._until.put(key, now + ttl_s)

    def __contains__(self, key: object) -> bool:
        until = self._until._data.get(key)  # no LRU refresh on a lookup
        if until is None:
            return False
        if until <= time.monotonic():
            self._until.pop(key)
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)


# ------------------------------------------------------------------------------------------------------------
# Address scope
# ------------------------------------------------------------------------------------------------------------

LOOPBACK, PRIVATE, PUBLIC = 0, 1, 2
SCOPE_NAMES = {LOOPBACK: "loopback", PRIVATE: "private", PUBLIC: "public"}


def ip_scope(ip: str) -> int:
    """:data:`LOOPBACK`, :data:`PRIVATE` (RFC 1918, link-local, ULA, CGNAT) or :data:`PUBLIC` for an IP literal."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]").split("%")[0])
    except ValueError:
        return PUBLIC
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback or addr.is_unspecified:
        return LOOPBACK
    if addr.is_private or addr.is_link_local or addr in ipaddress.ip_network("100.64.0.0/10"):
        return PRIVATE
    return PUBLIC


def addr_scope(canonical: str) -> int:
    """The scope of a canonical block address; DNS names count as public (checked again once resolved)."""
    parts = canonical.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return ip_scope(parts[2])
    return PUBLIC


def may_dial(addr_rank: int, learnt_from_rank: int) -> bool:
    """An address is never more local than the forwarder it was learnt from (no reflection into a LAN)."""
    return addr_rank >= learnt_from_rank


# ------------------------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------------------------


class RepeatFilter(logging.Filter):
    """At most ``per_minute`` records per (logger, message template) and minute; the rest are dropped and
    counted, and the next record let through says how many were suppressed. Bounded: at most 512 templates."""

    def __init__(self, per_minute: int = 10) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._windows: BoundedMap[tuple[str, str], list[float]] = BoundedMap(512)  # [window start, count, dropped]
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= 60.0:
            dropped = 0 if window is None else int(window[2])
            self._windows.put(key, [now, 1.0, 0.0])
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar lines suppressed in the last minute]"
            return True
        if window[1] < self.per_minute:
            window[1] += 1
            return True
        window[2] += 1
        self.suppressed += 1
        return False
