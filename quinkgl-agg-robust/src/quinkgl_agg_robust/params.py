"""Parameter classes of the robust rules, as manifests carry them in ``aggregation.params``.

Kept apart from the rules so that registering the plugin imports attrs only, never torch. Decimals arrive as
strings (``{"trim_ratio": "0.2"}``); core's converter turns them into floats. An ``f`` left unset means the
manifest's ``byzantine_f``.
"""

from __future__ import annotations

from typing import Any

import attrs

_non_negative = attrs.validators.optional(attrs.validators.ge(0))
_positive = attrs.validators.optional(attrs.validators.ge(1))


def resolve_f(f: int | None, manifest: Any) -> int:
    """The number of Byzantine peers to tolerate: the params' ``f``, else the manifest's ``byzantine_f``, else 0."""
    if f is not None:
        return f
    return int(getattr(manifest, "byzantine_f", 0) or 0)


@attrs.frozen
class KrumParams:
    """``f``: Byzantine peers tolerated (default: the manifest's ``byzantine_f``)."""

    f: int | None = attrs.field(default=None, validator=_non_negative)


@attrs.frozen
class MultiKrumParams:
    """``f`` as for Krum; ``m``: how many best-scored models to average (default n - f of the models present)."""

    f: int | None = attrs.field(default=None, validator=_non_negative)
    m: int | None = attrs.field(default=None, validator=_positive)


@attrs.frozen
class TrimmedMeanParams:
    """Trim ``f`` values (default ``byzantine_f``) or, when set, ``trim_ratio`` × n values from each end."""

    f: int | None = attrs.field(default=None, validator=_non_negative)
    trim_ratio: float | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.ge(0.0), attrs.validators.lt(0.5)]),
    )


@attrs.frozen
class MedianParams:
    """The coordinatewise median takes no tuning."""


@attrs.frozen
class EntropyWeightedAvgParams:
    """``floor``: the share of its sample weight a single-class peer keeps (0 drops such peers entirely)."""

    floor: float = attrs.field(default=0.1, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])


@attrs.frozen
class CenteredClippingParams:
    """``tau``: clipping radius (L2, whole model; default adaptive, see the README); ``iterations``: refinements."""

    tau: float | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0.0)))
    iterations: int = attrs.field(default=3, validator=[attrs.validators.ge(1), attrs.validators.le(100)])
