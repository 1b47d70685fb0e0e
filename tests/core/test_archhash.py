"""Arch hash: structure only, stable across processes, sensitive to every structural change."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from helpers import mnist_net
from quinkgl.manifest import compute_arch_hash
from quinkgl.models import PyTorchModel

HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def mlp(hidden=128, act=nn.ReLU, order_swapped=False, layer=nn.Linear):
    layers = [nn.Flatten(), layer(784, hidden), act(), nn.Linear(hidden, 64), act(), nn.Linear(64, 10)]
    if order_swapped:
        layers[2], layers[1] = layers[1], layers[2]
    return nn.Sequential(*layers)


def test_guide_mnistnet_hash_format_and_weight_independence():
    model = mnist_net()
    first = compute_arch_hash(model)
    assert HASH.match(first)
    for p in model.parameters():
        nn.init.normal_(p)
    assert compute_arch_hash(model) == first
    assert compute_arch_hash(mnist_net()) == first


@pytest.mark.parametrize(
    "changed",
    [
        lambda: mlp(hidden=127),
        lambda: mlp(act=nn.Tanh),
        lambda: mlp(act=nn.GELU),
        lambda: mlp(order_swapped=True),
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)),
        lambda: mlp().to(torch.float64),
        lambda: nn.Sequential(
            nn.Flatten(), nn.Linear(784, 128, bias=False), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        ),
    ],
    ids=["layer-size", "activation-tanh", "activation-gelu", "layer-order", "layer-removed", "dtype", "bias"],
)
def test_structural_changes_change_the_hash(changed):
    assert compute_arch_hash(changed()) != compute_arch_hash(mlp())


def test_layer_type_change_changes_hash():
    conv_a = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())
    conv_b = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    pool_a = nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2))
    pool_b = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AvgPool2d(2))
    assert compute_arch_hash(conv_a) != compute_arch_hash(conv_b)
    assert compute_arch_hash(pool_a) != compute_arch_hash(pool_b)


def test_root_class_name_is_not_part_of_the_identity():
    class MyModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

    assert compute_arch_hash(MyModel()) == compute_arch_hash(mnist_net())


def test_hash_identical_across_processes():
    code = (
        "import torch.nn as nn; from quinkgl.manifest import compute_arch_hash;"
        "print(compute_arch_hash(nn.Sequential(nn.Flatten(), nn.Linear(784,128), nn.ReLU(), nn.Linear(128,64),"
        " nn.ReLU(), nn.Linear(64,10))))"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(2)
    }
    assert outputs == {compute_arch_hash(mlp())}


def test_not_a_module_is_a_clear_error():
    with pytest.raises(TypeError, match=r"needs a torch\.nn\.Module"):
        compute_arch_hash(object())


def test_data_schema_hash():
    wrapper = PyTorchModel(mnist_net())
    assert HASH.match(wrapper.get_data_schema_hash())
    assert wrapper.get_arch_hash() == compute_arch_hash(mnist_net())
    explicit = PyTorchModel(mnist_net(), input_shape=(1, 28, 28), output_shape=(10,))
    assert explicit.get_data_schema_hash() != wrapper.get_data_schema_hash()
    assert PyTorchModel(mnist_net(), label_type="one_hot").get_data_schema_hash() != wrapper.get_data_schema_hash()
    with pytest.raises(ValueError, match="input_shape"):
        PyTorchModel(nn.Sequential(nn.Conv2d(1, 2, 3))).get_data_schema_hash()
