"""Plugin discovery through real entry points (fake .dist-info folders), broken plugins, requirement resolution."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest

from helpers import make_manifest
from quinkgl.errors import PluginError
from quinkgl.manifest.codec import manifest_to_dict, parse_manifest
from quinkgl.plugins import hookspecs
from quinkgl.plugins.manager import build_registry
from quinkgl.plugins.requirements import requirements_for, resolve_components

GROUP = "quinkgl_test"  # a test-only group, so the real installed plugins are not involved

GOOD = """
from quinkgl.plugins import hookimpl, AggregatorSpec
import attrs

@attrs.frozen
class Params:
    alpha: float = 0.5

def factory(params, manifest):
    return ("built", params)

@hookimpl
def quinkgl_register_aggregators():
    return [AggregatorSpec(name="ToyAvg", factory=factory, params=Params, description="toy")]
"""


def make_distribution(site, dist, module, source, version="1.0", group=GROUP):
    """Write ``<dist>-<version>.dist-info`` with one entry point plus the plugin module."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{dist} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("toy_")]:
        del sys.modules[name]


def test_core_builtins_are_registered_without_entry_points():
    registry = build_registry(load_entry_points=False)
    assert registry.names("aggregator") == ["FedAvg"]
    assert registry.names("topology") == ["RandomTopology"]
    assert registry.get("aggregator", "fedavg").provider.distribution == "quinkgl-core"
    assert registry.get("topology", "RANDOMTOPOLOGY").name == "RandomTopology"


def test_entry_point_plugin_is_discovered_with_its_distribution(site):
    make_distribution(site, "toy-agg", "toy_agg", GOOD)
    registry = build_registry(group=GROUP)
    comp = registry.get("aggregator", "toyavg")
    assert (comp.provider.distribution, comp.provider.version) == ("toy-agg", "1.0")
    assert comp.spec.factory(comp.spec.params(), None)[0] == "built"


def test_broken_plugins_are_recorded_not_fatal(site):
    make_distribution(site, "toy-agg", "toy_agg", GOOD)
    make_distribution(site, "toy-import", "toy_import", "import does_not_exist_anywhere\n")
    make_distribution(site, "toy-raises", "toy_raises", "raise RuntimeError('boom at import')\n")
    make_distribution(
        site,
        "toy-typo",
        "toy_typo",
        """
        from quinkgl.plugins import hookimpl
        @hookimpl
        def quinkgl_register_aggregator():  # misspelt: missing 's'
            return []
    """,
    )
    make_distribution(
        site,
        "toy-hookfail",
        "toy_hookfail",
        """
        from quinkgl.plugins import hookimpl
        @hookimpl
        def quinkgl_register_topologies():
            raise ValueError('registration failed')
    """,
    )
    registry = build_registry(group=GROUP)
    broken = {b.provider.distribution: b.error for b in registry.broken}
    assert "No module named 'does_not_exist_anywhere'" in broken["toy-import"]
    assert "boom at import" in broken["toy-raises"]
    assert "quinkgl_register_aggregator" in broken["toy-typo"]
    assert "registration failed" in broken["toy-hookfail"]
    assert registry.find("aggregator", "ToyAvg") is not None  # the good one still loaded


def test_two_plugins_claiming_one_name_is_a_conflict_naming_both(site):
    make_distribution(site, "toy-agg", "toy_agg", GOOD)
    make_distribution(site, "toy-agg2", "toy_agg2", GOOD)
    registry = build_registry(group=GROUP)
    assert any("toy-agg" in c and "toy-agg2" in c for c in registry.conflicts)


def test_unknown_name_lists_the_choices():
    with pytest.raises(PluginError, match="not recognized; choose one of: FedAvg"):
        build_registry(load_entry_points=False).get("aggregator", "Nope")


def test_unknown_first_party_name_says_which_distribution_to_install():
    with pytest.raises(PluginError, match="pip install quinkgl-agg-robust"):
        build_registry(load_entry_points=False).get("aggregator", "Krum")


def test_requirements_group_components_by_distribution():
    registry = build_registry(load_entry_points=False)
    reqs = requirements_for(
        registry,
        [
            ("aggregator", "krum"),
            ("aggregator", "FedAvg"),
            ("topology", "cyclontopology"),
            ("transport", "libp2p"),
            ("data_policy", "default"),
        ],
    )
    by_dist = {r.distribution: r.provides for r in reqs}
    assert by_dist == {
        "quinkgl-agg-robust": ("aggregator:Krum",),
        "quinkgl-core": ("aggregator:FedAvg", "data_policy:default"),
        "quinkgl-topo": ("topology:CyclonTopology",),
        "quinkgl-transport-libp2p": ("transport:libp2p",),
    }
    with pytest.raises(PluginError, match="choose one of"):
        requirements_for(registry, [("topology", "StarTopology")])


def test_resolution_reports_every_problem_in_one_error(site):
    make_distribution(site, "toy-agg", "toy_agg", GOOD, version="1.0")
    make_distribution(site, "toy-broken", "toy_broken", "import nope_nope\n")
    registry = build_registry(group=GROUP)
    doc = manifest_to_dict(make_manifest(aggregation="Krum", topology="AffinityTopology"))
    doc["transport"]["name"] = "carrier-pigeon"
    doc["plugins"] = doc["plugins"] + [
        {"distribution": "toy-agg", "specifier": ">=2.0", "provides": ["aggregator:ToyAvg"]},
        {"distribution": "toy-broken", "specifier": ">=1.0", "provides": ["topology:Broken"]},
        {"distribution": "not-installed-anywhere", "specifier": ">=1", "provides": ["aggregator:Ghost"]},
    ]
    with pytest.raises(PluginError) as info:
        resolve_components(parse_manifest(json.dumps(doc)), registry)
    text = str(info.value)
    assert "toy-agg 1.0 is installed, but the manifest needs >=2.0" in text
    assert "toy-broken is installed but its plugin failed to load: ModuleNotFoundError" in text
    assert "not-installed-anywhere>=1 is not installed" in text
    assert "transport 'carrier-pigeon' is not available" in text
    # quinkgl-agg-robust is installed but this test's registry only loads the test group
    assert "aggregator 'Krum' is not available; quinkgl-agg-robust" in text
    assert "install them with: pip install 'toy-agg>=2.0' 'not-installed-anywhere>=1'" in text


def test_resolution_validates_component_params():
    registry = build_registry(load_entry_points=False)
    doc = manifest_to_dict(make_manifest())
    doc["topology"]["params"] = {"fanout": 0, "bogus": 1}
    doc["transport"]["name"] = "libp2p"
    with pytest.raises(PluginError, match=r"topology\.params"):
        resolve_components(parse_manifest(json.dumps(doc)), registry)


def test_every_hookspec_is_documented_and_prefixed():
    specs = [name for name in dir(hookspecs) if name.startswith("quinkgl_")]
    assert len(specs) == 11
    for name in specs:
        assert getattr(hookspecs, name).__doc__, name
