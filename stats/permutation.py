"""Permutation tests of a mean (sign flips) and of a difference in means (label shuffles).

Modelled on `scipy.stats.permutation_test`: public function -> input validation -> worker,
a frozen result dataclass, an explicit `rng`, and exact enumeration whenever it is cheap.
The p-value conventions are scipy's, so the two agree wherever both are exact:

* exact:        p = count / (number of patterns), the observed pattern included;
* Monte Carlo:  p = (count + 1) / (B + 1)  (the observed pattern counted once);
* two-sided:    p = min(1, 2 * min(p_greater, p_less)).

"count" is the number of patterns whose statistic is >= (greater) or <= (less) the observed
one. Equality is decided with a tolerance of 100 machine epsilons times sum(|x|): sums of
the same numbers taken in different orders differ in the last bits, and a theoretical tie
(e.g. 0.1 + 0.2 - 0.3 against its mirror) must count as a tie. scipy scales its tolerance
by |observed| instead, which misses ties when the observed statistic is ~0 by cancellation;
on data whose sums are exact in floating point (integers, dyadic fractions) both agree bit
for bit.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from stats._validate import (
    Alternative,
    NanPolicy,
    as_sample,
    check_alternative,
    check_n_resamples,
    make_rng,
)
from worlds.errors import SpecError

Method = Literal["auto", "exact", "monte_carlo"]
METHODS = ("auto", "exact", "monte_carlo")

# SCIENCE.md §4: exact over all 2^n sign patterns when n <= 20.
SIGN_FLIP_EXACT_MAX_N = 20
# method="exact" may go further: meet-in-the-middle needs 2 * 2^(n/2) sums, ~0.3 s at n = 40.
SIGN_FLIP_FORCED_EXACT_MAX_N = 40
# Label permutations: exact when C(n_a + n_b, n_a) is at most this (auto), or forced up to
# the second bound (memory is chunked; time is ~1 s per few million partitions).
TWO_SAMPLE_EXACT_MAX = 100_000
TWO_SAMPLE_FORCED_EXACT_MAX = 5_000_000

_TIE_EPS = 100 * np.finfo(np.float64).eps
_CHUNK_ELEMENTS = 1 << 20  # bounds the (resamples x n) working matrices to ~8 MB


@dataclass(frozen=True)
class SignFlipResult:
    """Result of `sign_flip_test`. statistic = mean(x); n_resamples = patterns examined
    (2^n when exact)."""

    statistic: float
    p_value: float
    exact: bool
    n: int
    n_resamples: int
    alternative: str


@dataclass(frozen=True)
class TwoSampleResult:
    """Result of `two_sample_permutation_test`. statistic = mean(a) - mean(b);
    n_resamples = partitions examined (C(n_a + n_b, n_a) when exact)."""

    statistic: float
    p_value: float
    exact: bool
    n_a: int
    n_b: int
    n_resamples: int
    alternative: str


def sign_flip_test(
    x: object,
    alternative: Alternative = "greater",
    n_resamples: int = 9999,
    rng: int | np.random.Generator | None = None,
    *,
    method: Method = "auto",
    nan_policy: NanPolicy = "raise",
) -> SignFlipResult:
    """Sign-flip permutation test of mean(x) against 0 (one sample, or paired differences).

    Under H0 each x_i is symmetric about 0, so every sign pattern is equally likely.
    method="auto" enumerates all 2^n patterns when n <= 20 (meet in the middle: two halves
    of 2^(n/2) partial sums, counted by binary search, a few ms at n = 20) and otherwise
    draws `n_resamples` random patterns from `rng` (an int seed, a numpy Generator, or None
    for the fixed seed 0, so results are reproducible). method="exact" enumerates up to
    n = 40; method="monte_carlo" always samples. Zeros and ties are fine; constant data
    give p = 2^-n for a positive constant (greater). nan_policy="raise" rejects NaN/inf
    naming `x`; "omit" drops them.
    """
    alternative = check_alternative(alternative)
    n_resamples = check_n_resamples(n_resamples)
    if method not in METHODS:
        raise SpecError("method", f"must be one of {list(METHODS)}, got {method!r}")
    gen = make_rng(rng)
    data = as_sample(x, "x", nan_policy=nan_policy)
    n = data.size
    if method == "exact" and n > SIGN_FLIP_FORCED_EXACT_MAX_N:
        raise SpecError("method", f"exact enumeration supports n <= {SIGN_FLIP_FORCED_EXACT_MAX_N}, got n = {n}")
    exact = method == "exact" or (method == "auto" and n <= SIGN_FLIP_EXACT_MAX_N)
    observed = float(data.sum())
    tol = _TIE_EPS * float(np.abs(data).sum())
    if exact:
        n_ge, n_le, total = _sign_flip_exact_counts(data, observed, tol)
    else:
        n_ge, n_le, total = _sign_flip_mc_counts(data, observed, tol, n_resamples, gen)
    p = _p_value(n_ge, n_le, total, exact, alternative)
    return SignFlipResult(float(np.mean(data)), p, exact, n, total, alternative)


def _signed_sums(values: np.ndarray) -> np.ndarray:
    """All 2^len(values) sums of +-values (the doubling construction)."""
    sums = np.zeros(1)
    for v in values:
        sums = np.concatenate((sums + v, sums - v))
    return sums


def _sign_flip_exact_counts(data: np.ndarray, observed: float, tol: float) -> tuple[int, int, int]:
    # Meet in the middle: every pattern's sum is a + b with a from the first half's 2^k
    # partial sums and b from the second half's; for each a, binary search counts the b's.
    k = data.size // 2
    left = _signed_sums(data[:k])  # (2^k,)
    right = np.sort(_signed_sums(data[k:]))  # (2^(n-k),)
    m = right.size
    n_ge = m * left.size - int(np.searchsorted(right, observed - tol - left, side="left").sum())
    n_le = int(np.searchsorted(right, observed + tol - left, side="right").sum())
    return n_ge, n_le, left.size * m


def _sign_flip_mc_counts(
    data: np.ndarray, observed: float, tol: float, n_resamples: int, gen: np.random.Generator
) -> tuple[int, int, int]:
    n = data.size
    chunk = max(1, _CHUNK_ELEMENTS // n)
    n_ge = n_le = 0
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        flips = gen.random((m, n)) < 0.5  # (m, n) True = sign flipped
        sums = observed - 2.0 * (flips @ data)  # (m,)
        n_ge += int(np.count_nonzero(sums >= observed - tol))
        n_le += int(np.count_nonzero(sums <= observed + tol))
        done += m
    return n_ge, n_le, n_resamples


def two_sample_permutation_test(
    a: object,
    b: object,
    alternative: Alternative = "greater",
    n_resamples: int = 9999,
    rng: int | np.random.Generator | None = None,
    *,
    method: Method = "auto",
    nan_policy: NanPolicy = "raise",
) -> TwoSampleResult:
    """Label-permutation test of mean(a) - mean(b) (unpaired samples).

    Under H0 the pooled values are exchangeable between the samples. method="auto"
    enumerates all C(n_a + n_b, n_a) partitions when there are at most 100 000 of them,
    else draws `n_resamples` random relabellings from `rng` (int seed, Generator, or None
    for seed 0). alternative="greater" tests mean(a) > mean(b).
    """
    alternative = check_alternative(alternative)
    n_resamples = check_n_resamples(n_resamples)
    if method not in METHODS:
        raise SpecError("method", f"must be one of {list(METHODS)}, got {method!r}")
    gen = make_rng(rng)
    xa = as_sample(a, "a", nan_policy=nan_policy)
    xb = as_sample(b, "b", nan_policy=nan_policy)
    n_a, n_b = xa.size, xb.size
    n_partitions = math.comb(n_a + n_b, n_a)
    if method == "exact" and n_partitions > TWO_SAMPLE_FORCED_EXACT_MAX:
        raise SpecError(
            "method",
            f"exact enumeration supports at most {TWO_SAMPLE_FORCED_EXACT_MAX} partitions, "
            f"got C({n_a + n_b}, {n_a}) = {n_partitions}",
        )
    exact = method == "exact" or (method == "auto" and n_partitions <= TWO_SAMPLE_EXACT_MAX)
    pooled = np.concatenate((xa, xb))
    tol = _TIE_EPS * float(np.abs(pooled).sum())
    # mean(a) - mean(b) = sum_a * (1/n_a + 1/n_b) - total/n_b is increasing in sum_a, so the
    # counts can be taken on sum_a, which is cheaper and rounds less.
    observed = float(xa.sum())
    if exact:
        n_ge, n_le, total = _two_sample_exact_counts(pooled, n_a, observed, tol)
    else:
        n_ge, n_le, total = _two_sample_mc_counts(pooled, n_a, observed, tol, n_resamples, gen)
    p = _p_value(n_ge, n_le, total, exact, alternative)
    stat = float(np.mean(xa) - np.mean(xb))
    return TwoSampleResult(stat, p, exact, n_a, n_b, total, alternative)


def _two_sample_exact_counts(
    pooled: np.ndarray, n_a: int, observed: float, tol: float
) -> tuple[int, int, int]:
    n = pooled.size
    # Enumerate the smaller side's index sets; sum_a = total - sum_b flips the comparisons.
    k = min(n_a, n - n_a)
    flip = k != n_a
    total_sum = float(pooled.sum())
    target = total_sum - observed if flip else observed
    n_ge = n_le = count = 0
    if k == 0:  # one partition only: the observed one
        return 1, 1, 1
    combos = itertools.combinations(range(n), k)
    per_chunk = max(1, _CHUNK_ELEMENTS // k)
    while True:
        flat = np.fromiter(
            itertools.chain.from_iterable(itertools.islice(combos, per_chunk)), dtype=np.intp
        )
        if flat.size == 0:
            break
        sums = pooled[flat.reshape(-1, k)].sum(axis=1)  # (m,)
        ge = int(np.count_nonzero(sums >= target - tol))
        le = int(np.count_nonzero(sums <= target + tol))
        n_ge, n_le = (n_ge + le, n_le + ge) if flip else (n_ge + ge, n_le + le)
        count += sums.size
    return n_ge, n_le, count


def _two_sample_mc_counts(
    pooled: np.ndarray, n_a: int, observed: float, tol: float, n_resamples: int,
    gen: np.random.Generator,
) -> tuple[int, int, int]:
    n = pooled.size
    chunk = max(1, _CHUNK_ELEMENTS // n)
    n_ge = n_le = 0
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        shuffled = gen.permuted(np.broadcast_to(pooled, (m, n)), axis=1)  # (m, n)
        sums = shuffled[:, :n_a].sum(axis=1)  # (m,)
        n_ge += int(np.count_nonzero(sums >= observed - tol))
        n_le += int(np.count_nonzero(sums <= observed + tol))
        done += m
    return n_ge, n_le, n_resamples


def _p_value(n_ge: int, n_le: int, total: int, exact: bool, alternative: str) -> float:
    adj = 0 if exact else 1
    p_greater = (n_ge + adj) / (total + adj)
    p_less = (n_le + adj) / (total + adj)
    if alternative == "greater":
        return float(p_greater)
    if alternative == "less":
        return float(p_less)
    return float(min(1.0, 2.0 * min(p_greater, p_less)))
