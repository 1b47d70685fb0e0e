"""--device: `auto` picks CUDA when present; every aggregator combines own and received tensors across devices."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from quinkgl.aggregation import ModelUpdate
from quinkgl.errors import UsageError
from quinkgl.manifest.codec import structure_params
from quinkgl.plugins.manager import build_registry
from quinkgl.runtime.devices import resolve_device, to_device


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


DEVICES = available_devices()
PAIRS = [(own, received) for own in DEVICES for received in DEVICES if own != received]


def aggregators() -> list[tuple[str, object]]:
    """Every registered aggregator (core's FedAvg and whatever plugins are installed), built as a peer builds it."""
    registry = build_registry()
    built = []
    for component in registry.components("aggregator"):
        spec = component.spec
        built.append(
            (
                spec.name,
                spec.factory(structure_params({}, spec.params, "$.aggregation.params"), SimpleNamespace(byzantine_f=1)),
            )
        )
    return built


def updates(own_device: str, received_device: str) -> tuple[ModelUpdate, list[ModelUpdate]]:
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(4, 3, generator=gen)

    def update(sender: str, device: str) -> ModelUpdate:
        tensors = {
            "fc.weight": centre + 0.01 * torch.randn(4, 3, generator=gen),
            "fc.bias": torch.randn(3, generator=gen),
            "bn.num_batches_tracked": torch.tensor(5),
        }
        return ModelUpdate(sender, 1, 100, to_device(tensors, torch.device(device)))

    return update("own", own_device), [update(f"peer{i}", received_device) for i in range(6)]


def test_auto_picks_cuda_only_when_available():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("CPU") == "cpu"


def test_unavailable_or_unknown_device_is_a_usage_error():
    with pytest.raises(UsageError, match="not a torch device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            resolve_device("cuda")
    else:
        with pytest.raises(UsageError, match="CUDA device\\(s\\)"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("name, aggregator", aggregators(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_aggregator_on_one_device(name, aggregator):
    own, received = updates("cpu", "cpu")
    result = aggregator.aggregate(own, received)
    assert set(result.tensors) == set(own.tensors)
    assert all(t.device.type == "cpu" for t in result.tensors.values())


@pytest.mark.skipif(not PAIRS, reason=f"needs two torch devices (e.g. CPU and a CUDA GPU); this machine has {DEVICES}")
@pytest.mark.parametrize("own_device, received_device", PAIRS or [("cpu", "cpu")])
@pytest.mark.parametrize("name, aggregator", aggregators(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_aggregator_across_devices(name, aggregator, own_device, received_device):
    own, received = updates(own_device, received_device)
    result = aggregator.aggregate(own, received)
    expected = aggregator.aggregate(*updates("cpu", "cpu"))
    for tensor_name, tensor in result.tensors.items():
        assert tensor.device == own.tensors[tensor_name].device, tensor_name  # the own model's device
        torch.testing.assert_close(tensor.cpu(), expected.tensors[tensor_name], rtol=1e-4, atol=1e-5)
    assert result.used == expected.used


def test_without_torch_the_device_check_names_the_pip_install(monkeypatch):
    from quinkgl.errors import PluginError

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(PluginError, match=r"pip install 'quinkgl-core\[torch\]'"):
        resolve_device("auto")
