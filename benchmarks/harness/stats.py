"""Small statistics of timings: percentiles, the median of what is known, PSNR of two images."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile ``pct`` (0-100) of ascending ``sorted_values``: the smallest value with at least
    ``pct`` % of the values at or below it. NaN when there are none."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * pct / 100))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def percentile_linear(values: Iterable[float], pct: float) -> float:
    """Percentile ``pct`` (0-100) of ``values`` (any order) by linear interpolation between the closest ranks
    (as ``numpy.percentile``'s default). NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median_or_none(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def psnr_db(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit image ``b`` against ``a`` (arrays, or anything ``numpy.asarray``
    takes, such as PIL images of the same mode and size); ``inf`` when they are identical."""
    import numpy as np

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
