"""Confidence intervals for a mean: Student t and bootstrap (BCa by default).

Degenerate samples never raise (reports are computed on partial sweeps, where a group may
hold one seed or identical values):

* n = 0:          estimate NaN, interval (NaN, NaN);
* n = 1:          estimate x[0], interval (NaN, NaN) (no spread can be estimated);
* constant data:  interval (c, c), the point itself. The sample SD is exactly 0, so the
                  t interval has zero width and every bootstrap resample has mean c.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from stats._validate import NanPolicy, as_sample, check_confidence, check_n_resamples, make_rng
from worlds.errors import SpecError

BOOTSTRAP_METHODS = ("BCa", "percentile", "basic")


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval for the mean of a sample."""

    low: float
    high: float
    estimate: float  # the sample mean
    confidence: float
    method: str  # "t" | "BCa" | "percentile" | "basic"
    n: int

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def _degenerate(data: np.ndarray, confidence: float, method: str) -> Interval | None:
    n = data.size
    nan = math.nan
    if n == 0:
        return Interval(nan, nan, nan, confidence, method, 0)
    mean = float(np.mean(data))
    if n == 1:
        return Interval(nan, nan, mean, confidence, method, 1)
    if np.all(data == data[0]):
        c = float(data[0])
        return Interval(c, c, c, confidence, method, n)
    return None


def t_interval(x: object, confidence: float = 0.95, *, nan_policy: NanPolicy = "raise") -> Interval:
    """Student-t interval mean ± t_{(1+c)/2, n-1} · s/√n (see the module doc for n < 2)."""
    confidence = check_confidence(confidence)
    data = as_sample(x, "x", nan_policy=nan_policy, min_size=0)
    deg = _degenerate(data, confidence, "t")
    if deg is not None:
        return deg
    n = data.size
    mean = float(np.mean(data))
    sem = float(np.std(data, ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * sem
    return Interval(mean - half, mean + half, mean, confidence, "t", n)


def bootstrap_interval(
    x: object,
    confidence: float = 0.95,
    method: str = "BCa",
    n_resamples: int = 9999,
    rng: int | np.random.Generator | None = None,
    *,
    nan_policy: NanPolicy = "raise",
) -> Interval:
    """Bootstrap interval of the mean via `scipy.stats.bootstrap` (BCa, percentile or basic).

    rng: int seed, numpy Generator, or None for the fixed seed 0 (reproducible reports).
    If scipy cannot form the interval (e.g. BCa on two distinct values can be undefined)
    the interval is (NaN, NaN) rather than an exception.
    """
    confidence = check_confidence(confidence)
    n_resamples = check_n_resamples(n_resamples)
    canonical = {m.lower(): m for m in BOOTSTRAP_METHODS}.get(str(method).lower())
    if canonical is None:
        raise SpecError("method", f"must be one of {list(BOOTSTRAP_METHODS)}, got {method!r}")
    data = as_sample(x, "x", nan_policy=nan_policy, min_size=0)
    deg = _degenerate(data, confidence, canonical)
    if deg is not None:
        return deg
    gen = make_rng(rng)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # scipy warns (DegenerateDataWarning / RuntimeWarning) where BCa is undefined; we
        # report that as a NaN interval instead.
        warnings.simplefilter("ignore")
        res = sps.bootstrap(
            (data,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
            method=canonical, rng=gen, vectorized=True,
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        low = high = math.nan
    return Interval(low, high, float(np.mean(data)), confidence, canonical, data.size)
