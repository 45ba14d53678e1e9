"""The one confidence interval of the analysis: the 95% Student-t interval of a mean over replicates.

Sweeps have 2-3 replicates per configuration, too few for a bootstrap (seaborn's default ``errorbar``
resamples 2 values into at most 3 distinct means); the t-interval is exact for normal replicates and honest
about how little two runs say (t(0.975, 1) = 12.7). :func:`t_interval` is the ``errorbar`` callable the
figures hand to seaborn, :func:`mean_ci` the table's mean ± half-width; both rest on :func:`t_half_width`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats

LEVEL = 0.95


def _finite(values: Iterable) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


def t_half_width(values: Iterable) -> float:
    """Half-width of the 95% t-interval of the mean of the finite ``values``; NaN for fewer than two."""
    arr = _finite(values)
    if arr.size < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + LEVEL / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))


def t_interval(values: Iterable) -> tuple[float, float]:
    """``(low, high)``: the 95% t-interval of the mean of the finite ``values``; ``(nan, nan)`` (no band) for
    fewer than two. Seaborn's ``errorbar`` takes it as is (a vector in, an interval out)."""
    arr = _finite(values)
    half = t_half_width(arr)
    if math.isnan(half):
        return math.nan, math.nan
    mean = float(arr.mean())
    return mean - half, mean + half


def mean_ci(values: Iterable) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (NaN half-width for one value, NaN both for none);
    ``None`` and NaN values are left out."""
    arr = _finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), t_half_width(arr)
