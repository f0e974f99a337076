"""Effect sizes, the seeds needed for a target power, and Welch's t-test.

Degenerate inputs give NaN / None instead of raising, because reports are computed on
partial sweeps: an effect size needs n >= 2 (and n_a + n_b >= 3 for two samples); a zero
standard deviation gives +-inf when the mean difference is non-zero and NaN when it is 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import integrate
from scipy import stats as sps

from stats._validate import (
    Alternative,
    NanPolicy,
    as_sample,
    check_alternative,
    check_probability,
    paired_differences,
)
from worlds.errors import SpecError

# seeds_for_power gives up (returns None) beyond this many seeds.
MAX_SEEDS = 10_000_000


@dataclass(frozen=True)
class EffectSize:
    """Standardised mean difference. kind: "d_z" (one sample / paired) or "d" (two samples,
    pooled SD). n: number of values (pairs) used, n_a + n_b for "d"."""

    value: float
    kind: str
    n: int

    def __float__(self) -> float:
        return self.value


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.nan if num == 0 else math.copysign(math.inf, num)


def effect_size(
    a: object, b: object | None = None, *, paired: bool = False, nan_policy: NanPolicy = "raise"
) -> EffectSize:
    """Cohen's d_z = mean/SD (one sample a, or paired differences a - b when paired=True),
    or Cohen's d = (mean(a) - mean(b)) / pooled SD (two independent samples, SD with ddof 1).

    With nan_policy="omit" and paired=True a pair is dropped when either side is NaN.
    """
    if b is None:
        if paired:
            raise SpecError("b", "is required when paired=True")
        x = as_sample(a, "a", nan_policy=nan_policy, min_size=0)
        return _d_z(x)
    if paired:
        return _d_z(paired_differences(a, b, nan_policy=nan_policy))
    xa = as_sample(a, "a", nan_policy=nan_policy, min_size=0)
    xb = as_sample(b, "b", nan_policy=nan_policy, min_size=0)
    n_a, n_b = xa.size, xb.size
    if n_a < 1 or n_b < 1 or n_a + n_b < 3:
        return EffectSize(math.nan, "d", n_a + n_b)
    ss = float(((xa - xa.mean()) ** 2).sum() + ((xb - xb.mean()) ** 2).sum())
    pooled = math.sqrt(ss / (n_a + n_b - 2))
    return EffectSize(_ratio(float(xa.mean() - xb.mean()), pooled), "d", n_a + n_b)


def _d_z(x: np.ndarray) -> EffectSize:
    if x.size < 2:
        return EffectSize(math.nan, "d_z", int(x.size))
    return EffectSize(_ratio(float(x.mean()), float(np.std(x, ddof=1))), "d_z", int(x.size))


def t_test_power(effect: float, n: int, alpha: float = 0.05, alternative: Alternative = "greater") -> float:
    """Power of the one-sample / paired t-test with n values at standardised effect d_z
    (noncentral t with n - 1 df and noncentrality d_z·√n)."""
    alternative = check_alternative(alternative)
    alpha = check_probability(alpha, "alpha")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise SpecError("n", f"must be an integer >= 2, got {n!r}")
    return _power(float(effect), int(n), alpha, alternative)


def _nct_cdf(x: float, df: int, nc: float) -> float:
    """P(T <= x) for the noncentral t. scipy's boost-based nct returns NaN in some far
    tails (e.g. cdf(-4.03, 5, 7.35)); there we integrate the definition
    P(T <= x) = E_V[Phi(x sqrt(V/df) - nc)], V ~ chi2(df), numerically instead."""
    p = float(sps.nct.cdf(x, df, nc))
    if math.isfinite(p):
        return p
    p = 1.0 - float(sps.nct.sf(x, df, nc))
    if math.isfinite(p):
        return p
    val, _ = integrate.quad(
        lambda v: sps.norm.cdf(x * math.sqrt(v / df) - nc) * sps.chi2.pdf(v, df), 0, math.inf,
        epsabs=1e-13, limit=200,
    )
    return min(1.0, max(0.0, val))


def _power(effect: float, n: int, alpha: float, alternative: str) -> float:
    df = n - 1
    nc = effect * math.sqrt(n)
    if alternative == "greater":
        return 1.0 - _nct_cdf(float(sps.t.ppf(1 - alpha, df)), df, nc)
    if alternative == "less":
        return _nct_cdf(float(sps.t.ppf(alpha, df)), df, nc)
    crit = float(sps.t.ppf(1 - alpha / 2, df))
    return 1.0 - _nct_cdf(crit, df, nc) + _nct_cdf(-crit, df, nc)


def seeds_for_power(
    effect: float, power: float = 0.8, alpha: float = 0.05, alternative: Alternative = "greater"
) -> int | None:
    """Smallest n >= 2 seeds (pairs) at which a one-sample / paired t-test at level `alpha`
    detects standardised effect `effect` (d_z) with at least `power`.

    None when no n can: the effect is NaN or points away from the alternative (effect <= 0
    for "greater", >= 0 for "less", == 0 for "two-sided"), or more than 10^7 seeds would be
    needed. An infinite effect (zero spread) needs the minimum, 2.
    """
    alternative = check_alternative(alternative)
    power = check_probability(power, "power")
    alpha = check_probability(alpha, "alpha")
    try:
        d = float(effect)
    except (TypeError, ValueError):
        raise SpecError("effect", f"must be a number, got {effect!r}") from None
    if math.isnan(d) or (alternative == "greater" and d <= 0) or (alternative == "less" and d >= 0):
        return None
    if d == 0:
        return None
    if math.isinf(d):
        return 2
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # nct's series can warn about precision at large nc
        if _power(d, 2, alpha, alternative) >= power:
            return 2
        lo, hi = 2, 4  # invariant: power(lo) < target
        while _power(d, hi, alpha, alternative) < power:
            lo, hi = hi, hi * 2
            if lo > MAX_SEEDS:
                return None
        while hi - lo > 1:  # power(hi) >= target
            mid = (lo + hi) // 2
            if _power(d, mid, alpha, alternative) >= power:
                hi = mid
            else:
                lo = mid
    return hi if hi <= MAX_SEEDS else None


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of mean(a) - mean(b)."""

    statistic: float
    p_value: float
    df: float
    n_a: int
    n_b: int
    alternative: str


def welch_test(
    a: object, b: object, alternative: Alternative = "two-sided", *, nan_policy: NanPolicy = "raise"
) -> WelchResult:
    """`scipy.stats.ttest_ind(a, b, equal_var=False)`; NaN results (instead of warnings) when
    either sample has fewer than 2 values or both have zero variance."""
    alternative = check_alternative(alternative)
    xa = as_sample(a, "a", nan_policy=nan_policy, min_size=0)
    xb = as_sample(b, "b", nan_policy=nan_policy, min_size=0)
    nan = math.nan
    if xa.size < 2 or xb.size < 2:
        return WelchResult(nan, nan, nan, xa.size, xb.size, alternative)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        res = sps.ttest_ind(xa, xb, equal_var=False, alternative=alternative)
    return WelchResult(float(res.statistic), float(res.pvalue), float(res.df), xa.size, xb.size, alternative)
