"""Which sources a round asks, when identities are free (open swarms; docs/security.md, "Sybils").

Anyone can announce thousands of peer IDs. A fake ID that never answers a pull costs the requester a request
slot until the round's deadline, so a view full of them used to starve honest exchange: sources were picked at
random from the view. The defence is a small **answer record**: the peers whose model we have received and
decoded before ("proven" sources). Each round

* sources are asked in the topology's order, ``need`` at a time, failures replaced — as before;
* of the peers that never answered, at most ``need`` + :data:`MAX_PROBES_PER_ROUND` are asked per round (peers
  with a live connection to us first: an announced-only fake ID has none), and asking one opens a *spare*
  request slot, so a never-answered peer that hangs until the deadline does not take a proven source's slot;
* a source that misses a deadline loses its status (it is a newcomer again); a never-answered one still silent
  when the round has its quorum counts as late (avoided for 1, 2, 4 … rounds, runtime/pull.py's ``Avoided``).

So fake IDs, however many, cost at most ``need + 4`` requests per round and never keep a proven source from
being asked: once an honest peer answered, fake IDs cannot starve it. In a swarm without fake IDs every
source is proven after its first answer and nothing changes; until then (a fresh swarm's first round) a peer
may have up to ``2 * need + 4`` requests in flight instead of ``need`` (the round still closes at its quorum).
Not Sybil-proof: hosts that really answer become proven like anyone (robust aggregation and
:func:`distinct_updates` bound those); certified swarms are the Sybil-proof answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from quinkgl.runtime.bounded import BoundedSet

ENABLED = True  # tests switch the defence off to show that the attack bites without it
MAX_PROBES_PER_ROUND = 4  # never-answered peers asked per round: at most need + this many
MAX_PROBES_IN_FLIGHT = 32  # requests to never-answered peers still waiting (they may outlive their round)
MAX_RECORDED = 4096  # proven sources remembered
RECORD_TTL_S = 3600.0  # a source not heard from (answering) for an hour is probed again


class AnswerRecord:
    """The sources that answered us before, and the round's asking order they allow (:meth:`queue`)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = ENABLED if enabled is None else enabled
        self._proven = BoundedSet(MAX_RECORDED, RECORD_TTL_S)

    def answered(self, peer_id: str, now: float) -> None:
        self._proven.discard(peer_id)
        self._proven.add(peer_id, now)

    def missed(self, peer_id: str) -> None:
        self._proven.discard(peer_id)

    def proven(self, peer_id: str) -> bool:
        return peer_id in self._proven

    def queue(self, order: Sequence[str], connected: Collection[str], need: int) -> tuple[list[str], int]:
        """The sources to ask this round, in ``order`` (the topology's picks, then the other candidates), and how
        many spare request slots to open: every proven source stays; of the never-answered ones at most
        ``need`` + :data:`MAX_PROBES_PER_ROUND` stay (connected ones first: an announced-only fake ID has no
        connection), and each of them gets a spare slot when it is asked, so one that never answers does not
        hold a proven source back. Disabled: ``order`` and no spare slot (the behaviour before the record)."""
        if not self.enabled:
            return list(order), 0
        unproven = [p for p in order if p not in self._proven]
        live = set(connected)
        ranked = [p for p in unproven if p in live] + [p for p in unproven if p not in live]
        kept = set(ranked[: need + MAX_PROBES_PER_ROUND])
        return [p for p in order if p in self._proven or p in kept], len(kept)

    def __len__(self) -> int:
        return len(self._proven)


def model_digest(tensors: dict[str, Any]) -> bytes:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes: equal digests mean bit-equal models."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(_byte_dtype()).numpy().tobytes() if tensor.numel() else b"")
    return digest.digest()


def _byte_dtype() -> Any:
    import torch

    return torch.uint8


def distinct_updates(
    updates: Sequence[Any], own_tensors: dict[str, Any] | None = None, known: Iterable[bytes] = ()
) -> tuple[list[Any], int]:
    """``updates`` with bit-equal models from different senders counted once (the first, in the given order,
    stays), and models bit-equal to ``own_tensors`` or to a :func:`model_digest` in ``known`` dropped; returns
    (kept, dropped). Identical copies are what free identities send most cheaply: ``k`` hosts serving one model
    must not weigh ``k`` times, nor give a robust rule (Krum scores identical models 0) ``k`` "agreeing" inputs.
    ``known`` is for models we hold already, such as the one this round's training started from: a slower source's
    stale answer is often exactly that model (after Krum everyone adopts one peer's model), and as the centre of the
    models trained from it Krum would pick it every round and the swarm would stop learning."""
    seen: set[bytes] = set(known)
    if own_tensors is not None:
        seen.add(model_digest(own_tensors))
    kept = []
    for update in updates:
        key = model_digest(update.tensors)
        if key in seen:
            continue
        seen.add(key)
        kept.append(update)
    return kept, len(updates) - len(kept)
