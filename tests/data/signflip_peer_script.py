"""A hostile peer for tests: the guide's MNIST script, except that it sends its honest update sign-flipped.

Each round it trains honestly from ``base`` (the model it held when the round began), but after every optimizer
step its model is set to ``base − λ·(x − base)``, ``x`` being the honest weights (kept aside, and restored before
the next batch). So the model the runtime snapshots and serves after local training is the sign-flipped, scaled
update: the ``signflip`` attack of ``quinkgl simulate --byzantine``, done from a peer script for ``quinkgl run``.
``λ`` comes from ``--script-arg flip_lambda=…`` (default 10). Needs ``mnist_peer_script.py`` in the same folder.
"""

from __future__ import annotations

import torch
from mnist_peer_script import build_loaders  # noqa: F401 - the guide's data, unchanged
from mnist_peer_script import build_model as guide_model

LAMBDA = [10.0]
OPTIMIZERS: list[SignFlipSGD] = []


class SignFlipSGD(torch.optim.SGD):
    """The guide's SGD on the honest weights; the model itself holds ``base − λ·(honest − base)``."""

    def __init__(self, params, lam: float, **kwargs):
        super().__init__(params, **kwargs)
        self.lam = lam
        self.weights = [p for group in self.param_groups for p in group["params"]]
        self.base: list[torch.Tensor] | None = None
        self.honest: list[torch.Tensor] | None = None

    def new_round(self) -> None:
        """The model now holds the aggregated model: the next round's updates are measured from it."""
        self.base = self.honest = None

    @torch.no_grad()
    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.base is None:  # first batch of a round: the model holds the round's starting point
            self.base = [p.detach().clone() for p in self.weights]
        elif self.honest is not None:  # the next batch's gradient is taken at the honest weights
            for p, h in zip(self.weights, self.honest, strict=True):
                p.copy_(h)
        super().zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = super().step(closure)
        with torch.no_grad():
            assert self.base is not None
            self.honest = [p.detach().clone() for p in self.weights]
            for p, b, h in zip(self.weights, self.base, self.honest, strict=True):
                p.copy_(b - self.lam * (h - b))
        return loss


def build_model(manifest, **kwargs):
    LAMBDA[0] = float(kwargs.get("flip_lambda", LAMBDA[0]))
    return guide_model(manifest, **kwargs)


def build_optimizer(manifest, model):
    optimizer = SignFlipSGD(model.parameters(), LAMBDA[0], lr=0.05, momentum=0.9)
    OPTIMIZERS.append(optimizer)
    return optimizer


def on_round_end(round_idx, metrics):
    for optimizer in OPTIMIZERS:
        optimizer.new_round()
    print(f"round={round_idx:03d} hostile (sign-flipped, lambda={LAMBDA[0]:g})", flush=True)
