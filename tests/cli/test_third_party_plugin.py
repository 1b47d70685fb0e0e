"""A third-party strategy distribution, end to end, as docs/plugins.md tells an author to write it.

The test writes a throwaway distribution (its own aggregator and its own topology) into a temporary folder,
pip-installs it into the test environment, sees both components in ``quinkgl info`` with their distribution,
creates a manifest naming them (which records the distribution), runs ``quinkgl simulate`` with it, and
uninstalls it in a ``finally``. With the distribution gone, the same manifest fails with the one ``pip install``
error.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import guide_arch_hash, manifest_create

DIST = "quinkgl-toy-strategies"
PYPROJECT = f"""
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{DIST}"
version = "1.2.0"
dependencies = ["quinkgl-core>=0.4,<0.5"]

[project.entry-points.quinkgl]
toy-strategies = "toy_strategies.plugin"

[tool.setuptools]
packages = ["toy_strategies"]
"""
PLUGIN = '''
"""Entry point: registers ToyMean and RingTopology (attrs only here; torch is imported by the factories)."""

import attrs
from quinkgl.plugins import AggregatorSpec, TopologySpec, hookimpl


@attrs.frozen
class ToyMeanParams:
    """``keep``: the own model's share of the result (0-1; manifests write decimals as strings: "0.5")."""

    keep: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])


@attrs.frozen
class RingParams:
    """``fanout``: how many successors (in peer-ID order) receive the model each round."""

    fanout: int = attrs.field(default=2, validator=attrs.validators.ge(1))


def _toy_mean(params, manifest):
    from toy_strategies.rules import ToyMean

    return ToyMean(params, manifest)


def _ring(params, manifest):
    from toy_strategies.rules import RingTopology

    return RingTopology(params, manifest)


@hookimpl
def quinkgl_register_aggregators():
    return [AggregatorSpec(name="ToyMean", factory=_toy_mean, params=ToyMeanParams,
                           description="own model blended with the uniform mean of the received ones")]


@hookimpl
def quinkgl_register_topologies():
    return [TopologySpec(name="RingTopology", factory=_ring, params=RingParams,
                         description="push to the next peers in peer-ID order")]
'''
RULES = '''
"""ToyMean and RingTopology."""

from quinkgl.aggregation import AggregationResult, weighted_mean


class ToyMean:
    min_updates = 1

    def __init__(self, params, manifest=None):
        self.params = params

    def aggregate(self, own, received):
        n = len(received)
        weights = [self.params.keep] + [(1.0 - self.params.keep) / n] * n
        tensors = weighted_mean([own, *received], weights)
        return AggregationResult(tensors, (own.sender, *(u.sender for u in received)))


class RingTopology:
    def __init__(self, params, manifest=None):
        self.params = params

    def select(self, own_id, candidates, round_idx, rng):
        ring = sorted(c.peer_id for c in candidates)
        start = ring.index(own_id) if own_id in ring else -1
        successors = [ring[(start + i) % len(ring)] for i in range(1, len(ring))]
        return [p for p in successors if p != own_id][: self.params.fanout]
'''


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_distribution(root: Path) -> Path:
    source = root / "toy-dist"
    package = source / "toy_strategies"
    package.mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(textwrap.dedent(PLUGIN))
    (package / "rules.py").write_text(textwrap.dedent(RULES))
    return source


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="needs setuptools to build offline")
def test_a_third_party_distribution_is_listed_used_and_required(cli, tmp_path, guide_script, mnist_root):
    source = write_distribution(tmp_path)
    installed = pip("install", "--no-deps", "--no-build-isolation", str(source))
    assert installed.returncode == 0, installed.stderr
    try:
        info = cli("info", "--json")
        assert info.returncode == 0, info.stderr
        listed = {
            (c["kind"], c["name"]): (c["distribution"], c["version"]) for c in json.loads(info.stdout)["components"]
        }
        assert listed[("aggregator", "ToyMean")] == (DIST, "1.2.0")
        assert listed[("topology", "RingTopology")] == (DIST, "1.2.0")
        table = cli("info")
        assert "ToyMean" in table.stdout and "RingTopology" in table.stdout and DIST in table.stdout

        bad = cli(*manifest_args("bad"), "--aggregation-param", "keep=2")
        assert bad.returncode != 0 and "keep" in bad.stderr  # the params class validates
        created = cli(
            *manifest_args("toy"),
            "--aggregation-param",
            "keep=0.5",
            "--topology-param",
            "fanout=2",
        )
        assert created.returncode == 0, created.stderr
        shown = json.loads((tmp_path / "toy.qgl").read_text())
        assert DIST in json.dumps(shown.get("plugins", shown))

        result = cli(
            "simulate",
            "--manifest",
            "toy.qgl",
            "--script",
            str(guide_script),
            "--peers",
            "3",
            "--rounds",
            "1",
            "--local-steps",
            "10",
            "--max-eval-batches",
            "5",
            "--byzantine",
            "1:inflate",
            "--script-arg",
            f"data_root={mnist_root}",
            "--output",
            "out",
            "--trust-policy",
            "open",
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert report["manifest"]["aggregation"] == "ToyMean" and report["manifest"]["topology"] == "RingTopology"
        assert any(r["aggregated_from"] for rounds in report["rounds"].values() for r in rounds)
    finally:
        removed = pip("uninstall", "-y", DIST)
    assert removed.returncode == 0, removed.stderr

    missing = cli(
        "simulate",
        "--manifest",
        "toy.qgl",
        "--script",
        str(guide_script),
        "--peers",
        "2",
        "--rounds",
        "1",
        "--trust-policy",
        "open",
    )
    assert missing.returncode != 0
    assert missing.stderr.count("pip install") == 1 and f"pip install '{DIST}" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr


def manifest_args(name: str) -> list[str]:
    return manifest_create(name, guide_arch_hash(), "--aggregation", "ToyMean", "--topology", "RingTopology")
