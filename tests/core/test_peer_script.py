"""Peer scripts as the user guide writes them: loading, hooks called at the right moments, clear errors."""

from __future__ import annotations

import textwrap

import pytest

from helpers import fedavg_manifest, run_swarm
from quinkgl.errors import ArchMismatchError, DataError, ScriptError
from quinkgl.runtime.options import PeerOptions
from quinkgl.script import ScriptPlugin

RECORDING = """
import sys
sys.path.insert(0, {guide_dir!r})
from mnist_peer_script import *          # the guide's script, unchanged
import mnist_peer_script as guide

EVENTS = []

def build_model(manifest, **kwargs):
    EVENTS.append(("build_model", dict(kwargs)))
    return guide.build_model(manifest, **kwargs)

def build_loaders(manifest, **kwargs):
    EVENTS.append(("build_loaders", dict(kwargs)))
    return guide.build_loaders(manifest, **kwargs)

def build_optimizer(manifest, model):
    EVENTS.append(("build_optimizer", type(model).__name__, isinstance(model, torch.nn.Module)))
    return guide.build_optimizer(manifest, model)

def on_round_end(round_idx, metrics):
    EVENTS.append(("on_round_end", round_idx, dict(metrics)))
    guide.on_round_end(round_idx, metrics)

def on_peer_discovered(peer_id):
    EVENTS.append(("on_peer_discovered", peer_id))

def on_aggregation_done(peer_ids, sample_count):
    EVENTS.append(("on_aggregation_done", list(peer_ids), sample_count))
"""


def write(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_guide_script_runs_and_every_hook_fires_in_order(tmp_path, guide_script, mnist_root, capsys):
    recorder = write(tmp_path, "recording.py", RECORDING.format(guide_dir=str(guide_script.parent)))
    scripts = [ScriptPlugin.from_file(recorder), ScriptPlugin.from_file(recorder)]
    options = [
        PeerOptions(
            node_id=f"peer-{i}",
            rounds=2,
            local_steps=20,
            max_eval_batches=20,
            script_args={"data_root": str(mnist_root), "batch_size": "64"},
        )
        for i in (1, 2)
    ]
    peers = run_swarm(fedavg_manifest(), scripts, options)
    events = scripts[0].module.EVENTS
    names = [e[0] for e in events]
    assert names[:3] == ["build_model", "build_loaders", "build_optimizer"]
    assert events[0][1] == {"data_root": str(mnist_root), "batch_size": "64"}  # --script-arg values arrive as kwargs
    assert events[2][1:] == ("MNISTNet", True)  # build_optimizer receives the nn.Module itself
    discovered = [e for e in events if e[0] == "on_peer_discovered"]
    assert discovered == [("on_peer_discovered", peers[1].peer_id)]
    rounds = [e for e in events if e[0] == "on_round_end"]
    assert [e[1] for e in rounds] == [1, 2]
    for _, _, metrics in rounds:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "round", "peers", "bytes_sent", "bytes_received"):
            assert key in metrics, key
        assert 0 < metrics["val_accuracy"] <= 1 and metrics["bytes_sent"] > 0
    aggregations = [e for e in events if e[0] == "on_aggregation_done"]
    assert aggregations and aggregations[0][1] == [peers[1].peer_id] and aggregations[0][2] == 120000
    # each aggregation precedes the round end of the same round
    assert names.index("on_aggregation_done") < names.index("on_round_end")
    out = capsys.readouterr().out
    assert "round=001 loss=" in out and "round=002" in out


@pytest.mark.parametrize(
    "body,message",
    [
        ("def build_loaders(manifest, **kwargs):\n    return None\n", r"missing required function\(s\): build_model"),
        ("x = 1/0\n", "importing peer script"),
    ],
)
def test_broken_scripts_are_clear_errors(tmp_path, body, message):
    with pytest.raises(ScriptError, match=message):
        ScriptPlugin.from_file(write(tmp_path, "bad.py", body))


BASE = """
import torch, torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset
class Net(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.net = nn.Sequential(*layers)
    def forward(self, x):
        return self.net(x)
def build_model(manifest, **kwargs):
    {model}
def build_loaders(manifest, **kwargs):
    {loaders}
"""
GOOD_MODEL = (
    "return Net(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))"
)
GOOD_LOADERS = (
    "ds = TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))\n"
    "    return DataLoader(ds, batch_size=16), DataLoader(ds, batch_size=16)"
)


@pytest.mark.parametrize(
    "model,loaders,error,message",
    [
        (
            "raise RuntimeError('no GPU here')",
            GOOD_LOADERS,
            ScriptError,
            r"build_model\(\) in .* raised RuntimeError: no GPU here",
        ),
        ("return 'a model'", GOOD_LOADERS, ScriptError, r"build_model\(\) .* must return a torch.nn.Module, got str"),
        (
            GOOD_MODEL,
            "return [1, 2, 3]",
            ScriptError,
            r"build_loaders\(\) .* must return \(train_loader, val_loader\), got a list of 3",
        ),
        (GOOD_MODEL, "return 1, 2", ScriptError, "train_loader is not iterable"),
        ("return Net(nn.Flatten(), nn.Linear(784, 10))", GOOD_LOADERS, ArchMismatchError, "arch hash"),
        (GOOD_MODEL, GOOD_LOADERS.replace("(64, 1, 28, 28)", "(64, 3, 28, 28)"), DataError, r"shape \[3, 28, 28\]"),
        (
            GOOD_MODEL,
            GOOD_LOADERS.replace("torch.randint(0, 10, (64,))", "torch.rand(64)"),
            DataError,
            "label_type is integer",
        ),
    ],
)
def test_wrong_returns_and_mismatches_name_the_function(tmp_path, model, loaders, error, message):
    script = ScriptPlugin.from_file(write(tmp_path, "s.py", BASE.format(model=model, loaders=loaders)))
    with pytest.raises(error, match=message):
        run_swarm(fedavg_manifest(), [script], [PeerOptions(node_id="p", rounds=1, local_steps=1)])


def test_strict_manifest_false_only_warns(tmp_path, caplog):
    small = "return Net(nn.Flatten(), nn.Linear(784, 10))"
    script = ScriptPlugin.from_file(write(tmp_path, "s.py", BASE.format(model=small, loaders=GOOD_LOADERS)))
    peers = run_swarm(
        fedavg_manifest(), [script], [PeerOptions(node_id="p", rounds=1, local_steps=1, strict_manifest=False)]
    )
    assert peers[0].completed == 1
    assert "--strict-manifest false" in caplog.text


def test_optimizer_of_wrong_type_and_raising_callback(tmp_path):
    body = (
        BASE.format(model=GOOD_MODEL, loaders=GOOD_LOADERS)
        + "def build_optimizer(manifest, model):\n    return 'sgd'\n"
    )
    with pytest.raises(ScriptError, match=r"build_optimizer\(\) .* must return a torch.optim.Optimizer"):
        run_swarm(
            fedavg_manifest(),
            [ScriptPlugin.from_file(write(tmp_path, "o.py", body))],
            [PeerOptions(node_id="p", rounds=1, local_steps=1)],
        )
    body = (
        BASE.format(model=GOOD_MODEL, loaders=GOOD_LOADERS)
        + "def on_round_end(round_idx, metrics):\n    metrics['nope']\n"
    )
    with pytest.raises(BaseException) as info:
        run_swarm(
            fedavg_manifest(),
            [ScriptPlugin.from_file(write(tmp_path, "r.py", body))],
            [PeerOptions(node_id="p", rounds=1, local_steps=1)],
        )
    from quinkgl.errors import user_error_in

    found = user_error_in(info.value)
    assert isinstance(found, ScriptError) and "on_round_end()" in str(found) and "KeyError" in str(found)


def test_a_raising_discovery_callback_stops_the_peer_with_a_script_error(tmp_path):
    from quinkgl.errors import user_error_in

    body = (
        BASE.format(model=GOOD_MODEL, loaders=GOOD_LOADERS)
        + "def on_peer_discovered(peer_id):\n    raise ValueError('bad print')\n"
    )
    scripts = [ScriptPlugin.from_file(write(tmp_path, f"d{i}.py", body)) for i in range(2)]
    with pytest.raises(BaseException) as info:
        run_swarm(fedavg_manifest(), scripts, [PeerOptions(node_id=f"p{i}", rounds=2, local_steps=1) for i in range(2)])
    found = user_error_in(info.value)
    assert isinstance(found, ScriptError) and "on_peer_discovered()" in str(found) and "bad print" in str(found)
