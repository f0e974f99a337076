"""sign_flip_test and two_sample_permutation_test against scipy.stats.permutation_test,
exact rational enumeration, and each other (forced exact vs Monte Carlo)."""

from __future__ import annotations

import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats as sps

from stats import sign_flip_test, two_sample_permutation_test
from tests.stats.strategies import dyadic_samples, float_samples
from worlds.errors import SpecError

ALTERNATIVES = ("greater", "less", "two-sided")


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def scipy_sign_flip(x, alternative, n_resamples=np.inf, rng=None):
    # One sample + permutation_type="samples": scipy flips the sign of each observation.
    return sps.permutation_test(
        (np.asarray(x, float),), _mean, permutation_type="samples", vectorized=True,
        n_resamples=n_resamples, alternative=alternative, rng=rng,
    ).pvalue


def scipy_two_sample(a, b, alternative, n_resamples=np.inf, rng=None):
    return sps.permutation_test(
        (np.asarray(a, float), np.asarray(b, float)), _diff, permutation_type="independent",
        vectorized=True, n_resamples=n_resamples, alternative=alternative, rng=rng,
    ).pvalue


def rational_sign_flip(x, alternative):
    """Exact oracle: every sign pattern summed in rational arithmetic, ties counted exactly."""
    q = [Fraction(v) for v in x]
    obs = sum(q)
    sums = [sum(s * v for s, v in zip(signs, q, strict=True)) for signs in itertools.product((1, -1), repeat=len(q))]
    ge = sum(s >= obs for s in sums) / len(sums)
    le = sum(s <= obs for s in sums) / len(sums)
    return {"greater": ge, "less": le, "two-sided": min(1.0, 2 * min(ge, le))}[alternative]


def rational_two_sample(a, b, alternative):
    """Exact oracle: every relabelling, sum of the first sample in rational arithmetic."""
    pooled = [Fraction(v) for v in list(a) + list(b)]
    obs = sum(pooled[: len(a)])
    sums = [sum(pooled[i] for i in c) for c in itertools.combinations(range(len(pooled)), len(a))]
    ge = sum(s >= obs for s in sums) / len(sums)
    le = sum(s <= obs for s in sums) / len(sums)
    return {"greater": ge, "less": le, "two-sided": min(1.0, 2 * min(ge, le))}[alternative]


@given(dyadic_samples(1, 10), st.sampled_from(ALTERNATIVES))
def test_sign_flip_equals_scipy_exactly_on_exact_data(x, alternative):
    res = sign_flip_test(x, alternative)
    assert res.exact and res.n == len(x) and res.n_resamples == 2 ** len(x)
    assert res.p_value == rational_sign_flip(x, alternative)
    if len(x) > 1:  # scipy needs two observations per sample
        assert res.p_value == scipy_sign_flip(x, alternative)
    assert res.statistic == pytest.approx(np.mean(x))


@given(float_samples(1, 8), st.sampled_from(ALTERNATIVES))
def test_sign_flip_matches_rational_enumeration_and_scipy(x, alternative):
    q = [Fraction(v) for v in x]
    obs = sum(q)
    scale = sum(abs(v) for v in q)
    gaps = [abs(sum(s * v for s, v in zip(signs, q, strict=True)) - obs)
            for signs in itertools.product((1, -1), repeat=len(q))]
    # Exclude near-ties (distinct in exact arithmetic, closer than float rounding can tell).
    assume(all(g == 0 or g > Fraction(1, 10**9) * scale for g in gaps))
    p = sign_flip_test(x, alternative).p_value
    assert p == pytest.approx(rational_sign_flip(x, alternative), abs=1e-15)
    # scipy's tie tolerance scales with |observed|, so it can miss exact ties whose float
    # sums differ in the last bits (e.g. when the mean is ~0); compare where none exist.
    if len(x) > 1 and sum(g == 0 for g in gaps) == 1:
        assert p == pytest.approx(scipy_sign_flip(x, alternative), abs=1e-15)


@given(dyadic_samples(1, 6), dyadic_samples(1, 6), st.sampled_from(ALTERNATIVES))
def test_two_sample_equals_scipy_exactly_on_exact_data(a, b, alternative):
    res = two_sample_permutation_test(a, b, alternative)
    assert res.exact and res.n_resamples == math.comb(len(a) + len(b), len(a))
    assert res.p_value == pytest.approx(rational_two_sample(a, b, alternative), abs=1e-15)
    if len(a) > 1 and len(b) > 1:
        assert res.p_value == scipy_two_sample(a, b, alternative)
    assert res.statistic == pytest.approx(np.mean(a) - np.mean(b))


@given(float_samples(1, 5), float_samples(1, 5), st.sampled_from(ALTERNATIVES))
def test_two_sample_matches_scipy_on_floats(a, b, alternative):
    pooled = [Fraction(v) for v in a + b]
    obs = sum(pooled[: len(a)])
    sums = [sum(pooled[i] for i in c) for c in itertools.combinations(range(len(pooled)), len(a))]
    scale = sum(abs(v) for v in pooled)
    # Exclude near-ties (distinct in exact arithmetic, closer than float rounding can tell).
    assume(all(s == obs or abs(s - obs) > Fraction(1, 10**9) * scale for s in sums))
    p = two_sample_permutation_test(a, b, alternative).p_value
    assert p == pytest.approx(rational_two_sample(a, b, alternative), abs=1e-15)
    # scipy misses exact ties of mean(a) - mean(b) whose float values differ in the last
    # bits (its tolerance scales with |observed|); compare where the observed is unique.
    if len(a) > 1 and len(b) > 1 and sum(s == obs for s in sums) == 1:
        assert p == pytest.approx(scipy_two_sample(a, b, alternative), abs=1e-15)


def test_exact_counts_on_known_cases():
    assert sign_flip_test([0.7]).p_value == 0.5  # n = 1: the observed and its mirror
    assert sign_flip_test([0.0]).p_value == 1.0
    assert sign_flip_test([2.0] * 5).p_value == 2.0**-5  # constant positive data
    assert sign_flip_test([2.0] * 5, "less").p_value == 1.0
    assert sign_flip_test([0.0, 0.0, 0.0], "two-sided").p_value == 1.0
    # theoretical tie that float rounding breaks: 0.1 + 0.2 - 0.3 vs -0.1 - 0.2 + 0.3
    assert sign_flip_test([0.1, 0.2, -0.3]).p_value == 5 / 8
    assert two_sample_permutation_test([3.0], [1.0, 2.0]).p_value == pytest.approx(1 / 3)
    assert two_sample_permutation_test([1.0, 1.0], [1.0, 1.0], "two-sided").p_value == 1.0


def _mc_tolerance(p: float, b: int) -> float:
    return 5 * math.sqrt(max(p * (1 - p), 1e-4) / b) + 2 / (b + 1)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_sign_flip_monte_carlo_within_error_of_exact(alternative):
    x = np.random.default_rng(7).normal(0.25, 1.0, 30)  # n = 30 > 20: auto is Monte Carlo
    mc = sign_flip_test(x, alternative, n_resamples=20000, rng=1)
    assert not mc.exact and mc.n_resamples == 20000
    exact = sign_flip_test(x, alternative, method="exact").p_value  # meet in the middle
    assert abs(mc.p_value - exact) < _mc_tolerance(exact, 20000)
    sp = scipy_sign_flip(x, alternative, n_resamples=20000, rng=np.random.default_rng(2))
    assert abs(sp - exact) < _mc_tolerance(exact, 20000)


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_two_sample_monte_carlo_within_error_of_exact(alternative):
    gen = np.random.default_rng(3)
    a, b = gen.normal(0.5, 1, 10), gen.normal(0.0, 1, 10)  # C(20, 10) = 184756 > 100000
    mc = two_sample_permutation_test(a, b, alternative, n_resamples=20000, rng=4)
    assert not mc.exact
    exact = two_sample_permutation_test(a, b, alternative, method="exact")
    assert exact.exact and exact.n_resamples == math.comb(20, 10)
    assert abs(mc.p_value - exact.p_value) < _mc_tolerance(exact.p_value, 20000)
    sp = scipy_two_sample(a, b, alternative, n_resamples=20000, rng=np.random.default_rng(5))
    assert abs(sp - exact.p_value) < _mc_tolerance(exact.p_value, 20000)


def test_monte_carlo_p_value_convention_and_determinism():
    x = np.full(25, 1.0)  # only the identity pattern reaches the observed sum
    res = sign_flip_test(x, n_resamples=999, rng=0)
    assert res.p_value == pytest.approx(1 / 1000)  # (0 + 1) / (B + 1)
    y = np.random.default_rng(0).normal(size=40)
    assert sign_flip_test(y, rng=11) == sign_flip_test(y, rng=11)
    assert sign_flip_test(y) == sign_flip_test(y, rng=0)  # None = documented seed 0
    assert sign_flip_test(y, rng=np.random.default_rng(11)) == sign_flip_test(y, rng=11)
    a, b = y[:20], y[20:] + 0.3
    assert two_sample_permutation_test(a, b, rng=3) == two_sample_permutation_test(a, b, rng=3)


@given(dyadic_samples(1, 12))
def test_exact_tail_probabilities_are_consistent(x):
    ge = sign_flip_test(x, "greater").p_value
    le = sign_flip_test(x, "less").p_value
    # P(T >= t) + P(T <= t) = 1 + P(T = t) >= 1 + 2^-n (the observed pattern itself)
    assert ge + le >= 1 + 2.0 ** -len(x) - 1e-12
    assert 0 < ge <= 1 and 0 < le <= 1


def test_exact_n20_is_fast():
    x = np.random.default_rng(1).normal(0.1, 1, 20)
    t0 = time.perf_counter()
    res = sign_flip_test(x)
    elapsed = time.perf_counter() - t0
    assert res.exact and res.n_resamples == 2**20
    assert elapsed < 5.0  # measured ~1 ms; loose bound for a loaded CI machine


def test_nan_policy_and_validation_errors():
    with pytest.raises(SpecError, match=r"`x\[1\]`"):
        sign_flip_test([1.0, float("nan")])
    assert sign_flip_test([1.0, float("nan"), 2.0], nan_policy="omit").n == 2
    with pytest.raises(SpecError, match="`x`"):
        sign_flip_test([])
    with pytest.raises(SpecError, match="`alternative`"):
        sign_flip_test([1.0], alternative="higher")
    with pytest.raises(SpecError, match="`n_resamples`"):
        sign_flip_test([1.0], n_resamples=0)
    with pytest.raises(SpecError, match="`rng`"):
        sign_flip_test([1.0], rng="seed")
    with pytest.raises(SpecError, match="`method`"):
        sign_flip_test(np.ones(41), method="exact")
    with pytest.raises(SpecError, match=r"`b\[0\]`"):
        two_sample_permutation_test([1.0], [float("inf")])
    with pytest.raises(SpecError, match="`a`"):
        two_sample_permutation_test([[1.0, 2.0]], [1.0])
