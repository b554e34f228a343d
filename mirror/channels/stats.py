"""Welch's t-test for `mirror metrics compare` (two versions' values of one metric, with
unequal variances and sizes).

The t distribution comes from SciPy (`scipy.stats.ttest_ind(..., equal_var=False)`),
imported on first use so that the CLI starts without it. What SciPy answers with NaN or
an infinity (both sides constant) is decided here and said in words instead.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class Welch:
    """t > 0 when a's mean is the larger. t and p are None when the test says nothing
    (`reason` says why); an exact difference (both sides constant) has p = 0."""

    t: float | None
    p: float | None
    df: float | None
    reason: str = ""


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Two-sided Welch's t-test of a against b (at least two values on each side)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two values on each side")
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        if a[0] == b[0]:
            return Welch(None, None, None, "both sides report the same constant value")
        return Welch(None, 0.0, None, "both sides are constant: the difference is exact")
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():
        # Nearly identical values make SciPy warn about precision; the answer stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind(list(a), list(b), equal_var=False)
    t, p, df = float(res.statistic), float(res.pvalue), float(res.df)
    if not (math.isfinite(t) and math.isfinite(p)):
        return Welch(None, None, None, "the test is undefined for these values")
    return Welch(t, p, df)
