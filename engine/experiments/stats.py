"""Confidence intervals for sweep cells: Wilson for shares, Student's t for means.

A cell's value is an estimate from a handful of samples (often 12-50), so sweeps carry an interval with
every cell and rank cells by its lower bound: one hit in 6 samples (0.17, Wilson 0.03-0.56) never beats
a steady 0.4 of 24 (0.22-0.61) on luck.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.96


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a share `successes / n`; (0, 1) when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0 or n hits.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact at the edges, no rounding residue
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def t_quantile(dof: int, z: float = Z95) -> float:
    """Two-sided 95% quantile of Student's t with `dof` degrees of freedom (Cornish-Fisher expansion).

    Within 1% of the exact value for dof >= 3; dof 1 and 2 are tabulated.
    """
    if dof < 1:
        return math.inf
    exact = {1: 12.706, 2: 4.303}
    if dof in exact and abs(z - Z95) < 1e-9:
        return exact[dof]
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """95% t-interval of the mean of `values` (finite ones only); (nan, nan) for none, (m, m) for one."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = statistics.fmean(finite)
    if len(finite) == 1:
        return mean, mean
    half = t_quantile(len(finite) - 1) * statistics.stdev(finite) / math.sqrt(len(finite))
    return mean - half, mean + half
