"""The robust aggregation rules on real tensors: Byzantine resistance, fallbacks, buffers, registration, params."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quinkgl.aggregation import FedAvg, ModelUpdate
from quinkgl.errors import ManifestError
from quinkgl.manifest.codec import structure_params
from quinkgl.plugins.manager import build_registry
from quinkgl_agg_robust.coordinatewise import coordinatewise_median, trimmed_mean
from quinkgl_agg_robust.distances import pairwise_sq_distances
from quinkgl_agg_robust.entropy import EntropyWeightedAvg, normalised_entropy

RULES = ("Krum", "MultiKrum", "TrimmedMean", "Median", "EntropyWeightedAvg", "CenteredClipping")
BYZANTINE_ROBUST = ("Krum", "MultiKrum", "TrimmedMean", "Median", "CenteredClipping")
SIGMA = 0.01  # spread of the honest models around their centre


@pytest.fixture(scope="module")
def registry():
    return build_registry()


def build(registry, name: str, byzantine_f: int = 0, **params):
    """Build a rule the way a peer does: through the registry, params from a manifest-like dict."""
    spec = registry.get("aggregator", name).spec
    manifest = SimpleNamespace(byzantine_f=byzantine_f)
    return spec.factory(structure_params(params, spec.params, "$.aggregation.params"), manifest)


def model(
    sender: str,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    count: int = 7,
    samples: int = 100,
    histogram: list[int] | None = None,
) -> ModelUpdate:
    """A small model: two floating tensors and an integer buffer, like a Linear layer plus BatchNorm's counter."""
    metadata = {"label_histogram": histogram} if histogram is not None else {}
    tensors = {"fc.weight": weight, "fc.bias": bias, "bn.num_batches_tracked": torch.tensor(count)}
    return ModelUpdate(sender, 3, samples, tensors, metadata)


def honest_models(n: int, seed: int = 0) -> list[ModelUpdate]:
    gen = torch.Generator().manual_seed(seed)
    centre_w, centre_b = torch.randn(4, 3, generator=gen), torch.randn(3, generator=gen)
    return [
        model(
            f"peer{i}",
            centre_w + SIGMA * torch.randn(4, 3, generator=gen),
            centre_b + SIGMA * torch.randn(3, generator=gen),
            count=7 if i == 0 else 99,
        )
        for i in range(n)
    ]


def attacker(kind: str, sender: str, honest: ModelUpdate, seed: int) -> ModelUpdate:
    gen = torch.Generator().manual_seed(seed)
    if kind == "scaled":
        w, b = honest.tensors["fc.weight"] * 1e6, honest.tensors["fc.bias"] * -1e6
    else:
        w, b = 100 * torch.randn(4, 3, generator=gen), 100 * torch.randn(3, generator=gen)
    return model(sender, w, b, count=12345, samples=10_000)


def mean_of(updates: list[ModelUpdate], name: str) -> torch.Tensor:
    return torch.stack([u.tensors[name] for u in updates]).mean(dim=0)


def error(result_tensors, honest: list[ModelUpdate]) -> float:
    """Largest absolute deviation of the aggregate from the mean of the honest models."""
    return max(float((result_tensors[name] - mean_of(honest, name)).abs().max()) for name in ("fc.weight", "fc.bias"))


# -- Byzantine resistance -------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ["scaled", "noise"])
@pytest.mark.parametrize("n_byzantine", [1, 2])
@pytest.mark.parametrize("name", BYZANTINE_ROBUST)
def test_robust_rules_stay_near_the_honest_mean_where_fedavg_does_not(registry, name, n_byzantine, attack):
    honest = honest_models(3 * n_byzantine + 3, seed=n_byzantine)  # own + enough honest peers for n > 2f + 2
    own, peers = honest[0], honest[1:]
    byzantine = [attacker(attack, f"evil{i}", honest[1], seed=i) for i in range(n_byzantine)]
    received = [*peers[:2], *byzantine, *peers[2:]]  # attackers in the middle: order must not matter

    fedavg = FedAvg().aggregate(own, received)
    assert error(fedavg.tensors, honest) > 10

    result = build(registry, name, n_byzantine).aggregate(own, received)
    assert error(result.tensors, honest) < 10 * SIGMA
    assert result.used[0] == own.sender
    if name in ("Krum", "MultiKrum"):
        assert not {b.sender for b in byzantine} & set(result.used)
        assert {b.sender for b in byzantine} <= set(result.excluded)


def test_krum_returns_one_of_the_models_and_multikrum_averages_m_of_them(registry):
    honest = honest_models(6)
    own, received = honest[0], honest[1:]
    krum = build(registry, "Krum", 1).aggregate(own, received)
    (chosen,) = [u for u in honest if u.sender in krum.used and u.sender != own.sender] or [own]
    assert torch.equal(krum.tensors["fc.weight"], chosen.tensors["fc.weight"])
    multi = build(registry, "MultiKrum", 1, m=2).aggregate(own, received)
    assert len(multi.used) in (2, 3) and len(multi.used) + len(multi.excluded) == len(honest)


def test_trimmed_mean_trim_ratio_overrides_f():
    values = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    assert float(trimmed_mean(values, 2)) == pytest.approx(4.5)
    assert float(trimmed_mean(torch.tensor([[0.0], [1.0], [2.0], [1000.0]]), 1)) == pytest.approx(1.5)


def test_trim_ratio_from_the_manifest_trims_that_share_of_each_end(registry):
    honest = honest_models(8)
    byzantine = [attacker("scaled", f"evil{i}", honest[1], seed=i) for i in range(2)]
    rule = build(registry, "TrimmedMean", f=0, trim_ratio="0.2")  # n = 10 -> trim 2 from each end
    assert rule.trim_count(10) == 2
    result = rule.aggregate(honest[0], [*honest[1:], *byzantine])
    assert error(result.tensors, honest) < 10 * SIGMA


def test_median_of_an_even_number_of_models_is_the_mean_of_the_middle_two():
    values = torch.tensor([[1.0, 10.0], [2.0, -5.0], [3.0, 0.0], [100.0, 1.0]])
    assert coordinatewise_median(values).tolist() == [2.5, 0.5]


def test_centered_clipping_with_a_fixed_radius_moves_at_most_tau_per_iteration(registry):
    own = model("own", torch.zeros(4, 3), torch.zeros(3))
    far = model("far", torch.full((4, 3), 1e6), torch.full((3,), 1e6))
    result = build(registry, "CenteredClipping", tau="1.0", iterations=2).aggregate(own, [far])
    moved = torch.cat([result.tensors["fc.weight"].flatten(), result.tensors["fc.bias"]]).norm()
    assert 0 < float(moved) <= 2 * 1.0 / 2 + 1e-5  # each iteration: mean of (0, clipped) moves by tau / n
    assert result.used == ("own", "far")


# -- fallbacks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "f", "n_received", "params"),
    [
        ("Krum", 1, 3, {}),  # n = 4 <= 2f + 2
        ("Krum", 0, 1, {}),  # two models: no neighbour to compare with
        ("MultiKrum", 2, 5, {}),
        ("TrimmedMean", 2, 3, {}),  # n = 4 <= 2k: nothing left after trimming
        ("Median", 0, 1, {}),  # two models have no majority
        ("CenteredClipping", 0, 1, {}),  # adaptive radius is 0 with a single neighbour
    ],
)
def test_too_few_models_keep_the_own_model_and_exclude_the_others(registry, name, f, n_received, params):
    honest = honest_models(n_received)
    own = honest[0]
    received = [attacker("scaled", f"evil{i}", honest[0], seed=i) for i in range(n_received)]
    result = build(registry, name, f, **params).aggregate(own, received)
    for key, tensor in own.tensors.items():
        assert torch.equal(result.tensors[key], tensor)
    assert result.used == (own.sender,)
    assert result.excluded == tuple(u.sender for u in received)


def test_min_updates_say_how_many_received_models_each_rule_needs(registry):
    assert build(registry, "Krum", 1).min_updates == 4
    assert build(registry, "Krum", 3, f=1).min_updates == 4  # params override the manifest
    assert build(registry, "TrimmedMean", 2).min_updates == 4
    assert build(registry, "Median").min_updates == 2
    assert build(registry, "EntropyWeightedAvg").min_updates == 0


@pytest.mark.parametrize("name", RULES)
def test_non_finite_and_misshapen_updates_are_excluded_not_fatal(registry, name):
    honest = honest_models(5)
    nan = model("nan", torch.full((4, 3), float("nan")), torch.zeros(3))
    wrong = model("wrong", torch.zeros(3, 4), torch.zeros(3))
    missing = ModelUpdate("missing", 3, 100, {"fc.weight": torch.zeros(4, 3)})
    result = build(registry, name).aggregate(honest[0], [nan, *honest[1:], wrong, missing])
    assert {"nan", "wrong", "missing"} <= set(result.excluded)
    assert all(torch.isfinite(t).all() for t in result.tensors.values())


# -- buffers and dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULES)
def test_integer_buffers_come_from_the_own_model_and_dtypes_are_kept(registry, name):
    honest = honest_models(7)
    own = ModelUpdate("own", 3, 100, {**honest[0].tensors, "fc.bias": honest[0].tensors["fc.bias"].double()})
    received = [
        ModelUpdate(u.sender, 3, 100, {**u.tensors, "fc.bias": u.tensors["fc.bias"].half()}) for u in honest[1:]
    ]
    result = build(registry, name, 1).aggregate(own, received)
    assert result.tensors["bn.num_batches_tracked"].item() == 7
    assert result.tensors["bn.num_batches_tracked"].dtype == torch.int64
    assert result.tensors["fc.bias"].dtype == torch.float64 and result.tensors["fc.weight"].dtype == torch.float32
    assert list(result.tensors) == list(own.tensors)


# -- EntropyWeightedAvg ---------------------------------------------------------------------------------------


def test_a_balanced_histogram_weighs_more_than_a_single_class_one(registry):
    balanced = model("balanced", torch.zeros(4, 3), torch.zeros(3), histogram=[25, 25, 25, 25])
    skewed = model("skewed", torch.ones(4, 3), torch.ones(3), histogram=[100, 0, 0, 0])
    result = build(registry, "EntropyWeightedAvg").aggregate(balanced, [skewed])
    # weights 100 x 1.0 and 100 x floor(0.1) = 10; the weight bound caps 100 at 3 x the lower median (10), so
    # the aggregate sits at 10 / 40 of the way to the skewed model (without the bound: 0.1 / 1.1)
    assert result.tensors["fc.weight"].mean().item() == pytest.approx(0.25, rel=1e-5)
    assert result.used == ("balanced", "skewed")
    # with three balanced models of four, the lower median is a balanced weight and nothing is capped
    more = [model(f"b{i}", torch.zeros(4, 3), torch.zeros(3), histogram=[25, 25, 25, 25]) for i in range(2)]
    result = build(registry, "EntropyWeightedAvg").aggregate(balanced, [*more, skewed])
    assert result.tensors["fc.weight"].mean().item() == pytest.approx(0.1 / 3.1, rel=1e-5)
    fedavg = FedAvg().aggregate(balanced, [skewed])
    assert fedavg.tensors["fc.weight"].mean().item() == pytest.approx(0.5)


def test_entropy_weights_follow_the_documented_formula():
    rule = EntropyWeightedAvg()
    updates = [
        model("uniform", torch.zeros(4, 3), torch.zeros(3), samples=50, histogram=[10, 10]),
        model("one-class", torch.zeros(4, 3), torch.zeros(3), samples=50, histogram=[0, 7]),
        model("none", torch.zeros(4, 3), torch.zeros(3), samples=30),
        model("garbage", torch.zeros(4, 3), torch.zeros(3), samples=30, histogram=["a", -1]),  # type: ignore[list-item]
    ]
    assert rule.weights(updates) == pytest.approx([50.0, 5.0, 30.0, 30.0])
    assert normalised_entropy([1, 1, 1, 1]) == pytest.approx(1.0)
    assert normalised_entropy([3, 1]) == pytest.approx(0.8112781, rel=1e-6)
    assert normalised_entropy([5]) is None and normalised_entropy([0, 0]) is None


def test_without_histograms_entropy_weighting_is_fedavg(registry):
    honest = honest_models(4)
    ours = build(registry, "EntropyWeightedAvg").aggregate(honest[0], honest[1:])
    theirs = FedAvg().aggregate(honest[0], honest[1:])
    for key in ("fc.weight", "fc.bias"):
        assert torch.allclose(ours.tensors[key], theirs.tensors[key], atol=1e-6)


# -- distances and properties ---------------------------------------------------------------------------------


def test_gram_distances_match_cdist_even_far_from_the_origin():
    gen = torch.Generator().manual_seed(1)
    rows = 1e3 + 1e-2 * torch.randn(6, 5000, generator=gen)  # long, close rows far out: where the identity cancels
    expected = torch.cdist(rows.double(), rows.double()) ** 2
    got = pairwise_sq_distances(rows)
    assert torch.allclose(got.double(), expected, rtol=1e-3, atol=1e-3)
    assert torch.equal(got.diagonal(), torch.zeros(6))


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 9), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_coordinatewise_results_stay_within_each_coordinates_range(n, d, seed):
    rows = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 10
    low, high = rows.min(dim=0).values - 1e-5, rows.max(dim=0).values + 1e-5
    for out in (coordinatewise_median(rows), trimmed_mean(rows, (n - 1) // 2)):
        assert bool(((out >= low) & (out <= high)).all())


# -- registration and params ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RULES)
def test_every_rule_is_registered_by_quinkgl_agg_robust(registry, name):
    component = registry.get("aggregator", name.lower())
    assert component.name == name
    assert component.provider.distribution == "quinkgl-agg-robust"
    assert not [b for b in registry.broken if b.provider.distribution == "quinkgl-agg-robust"]


def test_params_accept_decimal_strings_and_reject_unknown_keys(registry):
    spec = registry.get("aggregator", "TrimmedMean").spec
    assert structure_params({"trim_ratio": "0.2"}, spec.params, "$.aggregation.params").trim_ratio == 0.2
    with pytest.raises(ManifestError) as info:
        structure_params({"trim_ratio": "0.2", "trim": 1}, spec.params, "$.aggregation.params")
    assert "trim" in str(info.value) and "$.aggregation.params" in str(info.value)
    with pytest.raises(ManifestError, match="trim_ratio"):
        structure_params({"trim_ratio": "0.5"}, spec.params, "$.aggregation.params")
    clipping = registry.get("aggregator", "CenteredClipping").spec
    assert structure_params({"tau": "2.5", "iterations": 4}, clipping.params, "$").tau == 2.5


def test_importing_the_plugin_loads_neither_torch_nor_numpy():
    code = (
        "import sys, json\n"
        "import quinkgl_agg_robust.plugin as plugin\n"
        "names = [spec.name for spec in plugin.quinkgl_register_aggregators()]\n"
        "print(json.dumps({'names': names, 'heavy': sorted(m for m in ('torch', 'numpy') if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == {"names": list(RULES), "heavy": []}


def test_sorting_network_rules_match_a_full_sort_for_every_count():
    gen = torch.Generator().manual_seed(1)
    for n in range(1, 70):
        rows = torch.randint(-3, 4, (n, 257), generator=gen).float()  # many ties
        ordered = torch.sort(rows, dim=0).values
        median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
        assert torch.equal(coordinatewise_median(rows), median), n
        for k in {0, 1, (n - 1) // 2}:
            if n > 2 * k:
                assert torch.allclose(trimmed_mean(rows, k), ordered[k : n - k].mean(dim=0), atol=1e-6), (n, k)
