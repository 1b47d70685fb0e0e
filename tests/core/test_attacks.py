"""What each --byzantine attack sends, on tiny tensors."""

from __future__ import annotations

import torch

from quinkgl.attacks import Attack


def run(name, param=None, honest=None):
    attack = Attack(name, param, honest_models=(lambda: honest or []), peers=10, hostile=3)
    attack.begin_round({"w": torch.zeros(3), "n": torch.tensor(4)})
    return attack.outgoing({"w": torch.ones(3), "n": torch.tensor(4)})


def test_update_attacks_follow_their_formulas():
    assert torch.equal(run("signflip")["w"], -torch.ones(3))
    assert torch.equal(run("signflip", 3.0)["w"], torch.full((3,), -3.0))
    assert torch.equal(run("scale")["w"], torch.full((3,), 10.0))
    noisy = run("gaussian", 0.5)["w"]
    assert not torch.equal(noisy, torch.ones(3)) and torch.equal(run("gaussian", 0.0)["w"], torch.ones(3))
    for name in ("labelflip", "inflate", "histogram"):
        assert torch.equal(run(name)["w"], torch.ones(3))
    assert int(run("signflip")["n"]) == 4  # integer buffers pass unchanged


def test_omniscient_attacks_use_the_honest_models():
    honest = [{"w": torch.tensor([1.0, 2.0, 3.0])}, {"w": torch.tensor([3.0, 2.0, 1.0])}]
    assert torch.allclose(run("alie", 1.0, honest)["w"], torch.tensor([1.0, 2.0, 1.0]))  # mean - z * std
    assert torch.allclose(run("ipm", 0.5, honest)["w"], torch.full((3,), -1.0))  # base - eps * (mean - base)
