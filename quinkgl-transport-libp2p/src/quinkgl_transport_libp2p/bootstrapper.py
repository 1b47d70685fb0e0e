"""Bootstrap dialling: one bounded attempt at every bootstrap peer at start, then a retry loop per target.

Address forms and the trust model of unpinned ``host:port`` targets are in :mod:`.bootstrap`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from quinkgl.transport import TransportError

from .bootstrap import BootstrapTarget, dial_unknown, resolve
from .params import Libp2pParams

logger = logging.getLogger(__name__)

BOOTSTRAP_RETRY_MAX_S = 30.0
BOOTSTRAP_RETRY_ALONE_S = 2.0  # the retry cap while this peer is connected to nobody
Reachability = Callable[[ID, str, int], Awaitable[None]]  # (bootstrap peer, its IP, its port): ask it to dial back


class Bootstrapper:
    """Keeps a connection to each bootstrap target; ``learned`` maps its text to the peer ID that answered."""

    def __init__(
        self,
        *,
        host: IHost,
        targets: Sequence[BootstrapTarget],
        params: Libp2pParams,
        connected_peers: Callable[[], Sequence[str]],
        learned: dict[str, str],
        check_reachability: Reachability | None = None,
    ) -> None:
        self.host = host
        self.targets = list(targets)
        self.params = params
        self._connected_peers = connected_peers
        self.learned = learned
        self.own: set[str] = set()  # targets that turned out to be this peer itself (e.g. the manifest lists it)
        self._check_reachability = check_reachability
        self._reachability_checked: set[str] = set()
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """One bounded attempt at every target (concurrently), then a background loop per target."""
        self._nursery = nursery
        if not self.targets:
            return
        with trio.move_on_after(self.params.dial_timeout_s + 1):
            async with trio.open_nursery() as first:
                for target in self.targets:
                    first.start_soon(self.once, target)
        for target in self.targets:
            nursery.start_soon(self.loop, target)

    def connected(self, target: BootstrapTarget) -> bool:
        known = target.peer_id or self.learned.get(target.text)
        return known is not None and known in set(self._connected_peers())

    async def once(self, target: BootstrapTarget) -> bool:
        host = self.host
        if self.connected(target):
            return True
        expected = ID.from_base58(target.peer_id) if target.peer_id else None
        try:
            with trio.fail_after(self.params.dial_timeout_s):
                ips = await resolve(target)
                errors: list[str] = []
                for ip in ips:
                    try:
                        peer = await dial_unknown(host, ip, target.port, expected=expected)
                    except TransportError as exc:
                        if "is this peer itself" in str(exc):  # stop dialling ourselves
                            self.own.add(target.text)
                            return False
                        errors.append(str(exc))
                        continue
                    peer_text = peer.to_base58()
                    if self.learned.get(target.text) != peer_text:
                        # Unpinned: whoever answers becomes the bootstrap peer, so say loudly who that was.
                        logger.log(
                            logging.INFO if target.peer_id else logging.WARNING,
                            "bootstrap %s answered as peer %s%s",
                            target.describe(),
                            peer_text,
                            "" if target.peer_id else f" (pin it with {target.describe()}/p2p/{peer_text})",
                        )
                    self.learned[target.text] = peer_text
                    checker, nursery = self._check_reachability, self._nursery
                    if checker is not None and nursery is not None and peer_text not in self._reachability_checked:
                        self._reachability_checked.add(peer_text)
                        nursery.start_soon(checker, peer, ip, target.port)
                    return True
                raise TransportError("; ".join(errors) or "no address")
        except trio.TooSlowError:
            logger.warning("bootstrap %s: no answer within %d s", target.describe(), self.params.dial_timeout_s)
        except TransportError as exc:
            logger.warning("bootstrap %s failed: %s", target.describe(), exc)
        return False

    async def loop(self, target: BootstrapTarget) -> None:
        delay = 1.0
        while target.text not in self.own:
            if self.connected(target):
                delay = 1.0
                await trio.sleep(1.0)
                continue
            ok = await self.once(target)
            # While this peer is connected to nobody, keep retrying every few seconds (peers of a swarm start at
            # about the same time, and a bootstrap peer still loading may refuse for a while); back off only once
            # the peer has other connections.
            cap = BOOTSTRAP_RETRY_MAX_S if self._connected_peers() else BOOTSTRAP_RETRY_ALONE_S
            delay = 1.0 if ok else min(delay * 2, cap)
            await trio.sleep(delay)
