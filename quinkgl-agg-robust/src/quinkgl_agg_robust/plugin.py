"""Entry point of quinkgl-agg-robust (group ``quinkgl``): registers the robust aggregation rules.

Only attrs parameter classes are imported here; each factory imports its rule module (and with it torch)
when a peer actually builds the rule.
"""

from __future__ import annotations

from quinkgl.plugins import AggregatorSpec, hookimpl
from quinkgl_agg_robust.params import (
    CenteredClippingParams,
    EntropyWeightedAvgParams,
    KrumParams,
    MedianParams,
    MultiKrumParams,
    TrimmedMeanParams,
)


def _krum(params, manifest):
    from quinkgl_agg_robust.krum import Krum

    return Krum(params, manifest)


def _multi_krum(params, manifest):
    from quinkgl_agg_robust.krum import MultiKrum

    return MultiKrum(params, manifest)


def _trimmed_mean(params, manifest):
    from quinkgl_agg_robust.coordinatewise import TrimmedMean

    return TrimmedMean(params, manifest)


def _median(params, manifest):
    from quinkgl_agg_robust.coordinatewise import Median

    return Median(params, manifest)


def _entropy_weighted_avg(params, manifest):
    from quinkgl_agg_robust.entropy import EntropyWeightedAvg

    return EntropyWeightedAvg(params, manifest)


def _centered_clipping(params, manifest):
    from quinkgl_agg_robust.clipping import CenteredClipping

    return CenteredClipping(params, manifest)


@hookimpl
def quinkgl_register_aggregators():
    return [
        AggregatorSpec(
            name="Krum",
            factory=_krum,
            params=KrumParams,
            description="keep the model closest to its n-f-2 nearest neighbours",
        ),
        AggregatorSpec(
            name="MultiKrum",
            factory=_multi_krum,
            params=MultiKrumParams,
            description="average the m models with the best Krum scores",
        ),
        AggregatorSpec(
            name="TrimmedMean",
            factory=_trimmed_mean,
            params=TrimmedMeanParams,
            description="coordinatewise mean without the f largest and smallest values",
        ),
        AggregatorSpec(name="Median", factory=_median, params=MedianParams, description="coordinatewise median"),
        AggregatorSpec(
            name="EntropyWeightedAvg",
            factory=_entropy_weighted_avg,
            params=EntropyWeightedAvgParams,
            description="sample-weighted average favouring balanced label histograms",
        ),
        AggregatorSpec(
            name="CenteredClipping",
            factory=_centered_clipping,
            params=CenteredClippingParams,
            description="move the own model by the mean of clipped differences",
        ),
    ]
