"""Byzantine peers for the simulator: ``quinkgl simulate --byzantine K:ATTACK[:PARAM]``.

A hostile peer runs the ordinary round loop (it trains on its shard and aggregates what it receives) but lies in
what it sends. It answers every request and pushes to every peer it knows, every round. The attacks:

========== ======= =================================================================================================
attack     PARAM   what the peer sends (``base`` = its model before the round's training, ``x`` = after)
========== ======= =================================================================================================
signflip   λ = 1   ``base − λ·(x − base)``: its honest update, sign-flipped and scaled
gaussian   σ = 1   ``x + N(0, σ²)`` in every coordinate
scale      λ = 10  ``base + λ·(x − base)``
alie       z       A Little Is Enough (Baruch et al., 2019): ``μ − z·σ`` of the honest peers' models, coordinatewise;
                   by default ``z = Φ⁻¹((n − s) / n)`` with ``s = ⌊n/2 + 1⌋ − f`` (n peers, f hostile)
ipm        ε = 0.5 inner-product manipulation (Xie et al., 2020): ``base − ε·(μ − base)``, μ the honest peers' mean
labelflip  —       trains on flipped labels (``C − 1 − y``) and sends that model honestly
inflate    —       its honest model, claiming 2^50 training samples
histogram  —       its honest model, claiming a perfectly balanced label histogram
========== ======= =================================================================================================

ALIE and IPM are omniscient, as in the papers: the simulator lets them read the honest peers' current models.
Nothing here is used by ``quinkgl run``; the runtime only calls :meth:`Attack.begin_round` and
:meth:`Attack.outgoing` of a peer whose ``PeerParts.attack`` is set.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from quinkgl.errors import QuinkGLError

if TYPE_CHECKING:
    import torch

INFLATED_SAMPLES = 2**50

# name -> (parameter name, default value); None: the attack takes no parameter.
ATTACKS: dict[str, tuple[str, float | None] | None] = {
    "signflip": ("lambda", 1.0),
    "gaussian": ("sigma", 1.0),
    "scale": ("lambda", 10.0),
    "alie": ("z", None),
    "ipm": ("epsilon", 0.5),
    "labelflip": None,
    "inflate": None,
    "histogram": None,
}


def usage() -> str:
    """One line per known attack, for error messages and --help."""
    parts = []
    for name, param in ATTACKS.items():
        if param is None:
            parts.append(name)
        else:
            default = "from n and f" if param[1] is None else f"{param[1]:g}"
            parts.append(f"{name}[:{param[0].upper()}] (default {default})")
    return "known attacks: " + ", ".join(parts)


@attrs.frozen
class ByzantineSpec:
    """``count`` hostile peers running ``attack`` with ``param`` (None: the attack's default)."""

    count: int
    attack: str
    param: float | None = None

    def __str__(self) -> str:
        return f"{self.count}:{self.attack}" + (f":{self.param:g}" if self.param is not None else "")


def parse_byzantine(text: str) -> ByzantineSpec:
    """Parse ``K:ATTACK[:PARAM]``; anything else is a :class:`QuinkGLError` that lists the known attacks."""
    pieces = text.strip().split(":")
    if len(pieces) not in (2, 3):
        raise QuinkGLError(f"--byzantine expects K:ATTACK[:PARAM], got {text!r}; {usage()}")
    count_text, attack = pieces[0], pieces[1].strip().lower()
    if not count_text.isdigit() or int(count_text) < 1:
        raise QuinkGLError(f"--byzantine {text!r}: K must be a positive whole number of peers; {usage()}")
    if attack not in ATTACKS:
        raise QuinkGLError(f"--byzantine {text!r}: unknown attack {attack!r}; {usage()}")
    param: float | None = None
    if len(pieces) == 3:
        spec = ATTACKS[attack]
        if spec is None:
            raise QuinkGLError(f"--byzantine {text!r}: {attack} takes no parameter; {usage()}")
        try:
            param = float(pieces[2])
        except ValueError:
            raise QuinkGLError(f"--byzantine {text!r}: {spec[0]} must be a number; {usage()}") from None
        if not math.isfinite(param) or (attack == "gaussian" and param < 0):
            raise QuinkGLError(
                f"--byzantine {text!r}: {spec[0]} must be a finite number"
                f"{' >= 0' if attack == 'gaussian' else ''}; {usage()}"
            )
    return ByzantineSpec(int(count_text), attack, param)


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s z_max: ``s = floor(n/2 + 1) - f`` supporters needed, ``z = Φ⁻¹((n - s) / n)``."""
    s = (n // 2 + 1) - f
    quantile = min(max((n - s) / n, 1e-6), 1 - 1e-6)
    return statistics.NormalDist().inv_cdf(quantile)


HonestModels = Callable[[], Sequence[Mapping[str, "torch.Tensor"]]]


@attrs.define
class Attack:
    """One hostile peer's behaviour; the runtime calls :meth:`begin_round` before training and :meth:`outgoing`
    on the tensors it is about to send."""

    name: str
    param: float | None = None
    seed: int = 0
    honest_models: HonestModels | None = None
    peers: int = 0
    hostile: int = 0
    push_all: bool = True  # send to every known peer every round, not just the topology's choice
    _base: dict[str, Any] | None = None
    _round: int = 0

    @property
    def value(self) -> float:
        spec = ATTACKS[self.name]
        if self.param is not None:
            return self.param
        if self.name == "alie":
            return alie_z(self.peers, self.hostile)
        assert spec is not None and spec[1] is not None
        return spec[1]

    @property
    def flips_labels(self) -> bool:
        return self.name == "labelflip"

    def begin_round(self, tensors: Mapping[str, Any]) -> None:
        """Remember the model the round's update is measured from (a detached copy, taken by the runtime)."""
        self._base = dict(tensors)
        self._round += 1

    def outgoing(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        """The tensors the hostile peer sends instead of its honest ``tensors``."""
        import torch

        out = dict(tensors)
        if self.name in ("labelflip", "inflate", "histogram"):
            return out
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._round)
        mean, std = self._honest_stats(tensors) if self.name in ("alie", "ipm") else ({}, {})
        for name, x in tensors.items():
            if not x.is_floating_point():
                continue
            base = self._base.get(name, x) if self._base is not None else x
            if self.name == "signflip":
                out[name] = base - self.value * (x - base)
            elif self.name == "scale":
                out[name] = base + self.value * (x - base)
            elif self.name == "gaussian":
                noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
                out[name] = x + self.value * noise
            elif self.name == "alie":
                out[name] = (mean[name] - self.value * std[name]).to(x.dtype)
            elif self.name == "ipm":
                out[name] = (base - self.value * (mean[name] - base)).to(x.dtype)
        return out

    def _honest_stats(self, own: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        models = list(self.honest_models()) if self.honest_models is not None else []
        if not models:
            models = [own]
        mean: dict[str, Any] = {}
        std: dict[str, Any] = {}
        for name, x in own.items():
            if not x.is_floating_point():
                continue
            stacked = torch.stack([m[name].detach().to(x.device, torch.float32) for m in models])
            mean[name] = stacked.mean(dim=0)
            std[name] = stacked.std(dim=0, correction=0) if len(models) > 1 else torch.zeros_like(mean[name])
        return mean, std


def fake_histogram(classes: int, total: int) -> list[int]:
    """A perfectly balanced label histogram of ``total`` samples."""
    share = max(total // max(classes, 1), 1)
    return [share] * classes
