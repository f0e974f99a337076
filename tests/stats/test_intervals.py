"""t_interval and bootstrap_interval against scipy, and the documented degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats as sps

from stats import bootstrap_interval, t_interval
from tests.stats.strategies import dyadic_samples, float_samples
from worlds.errors import SpecError


@given(float_samples(2, 30), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_t_interval_matches_scipy(x, confidence):
    arr = np.asarray(x)
    assume(np.ptp(arr) > 1e-9 * max(1.0, np.abs(arr).max()))
    lo, hi = sps.t.interval(confidence, arr.size - 1, loc=arr.mean(), scale=sps.sem(arr))
    res = t_interval(x, confidence)
    assert (res.low, res.high) == pytest.approx((lo, hi), rel=1e-9, abs=1e-9)
    assert res.n == arr.size and res.method == "t" and res.as_list() == [res.low, res.high]


@pytest.mark.parametrize("method", ["BCa", "percentile", "basic"])
def test_bootstrap_matches_scipy_with_the_same_generator(method):
    x = np.random.default_rng(0).gamma(2.0, size=15)
    ours = bootstrap_interval(x, 0.95, method, n_resamples=2000, rng=np.random.default_rng(42))
    ref = sps.bootstrap((x,), np.mean, n_resamples=2000, method=method, rng=np.random.default_rng(42))
    assert (ours.low, ours.high) == (ref.confidence_interval.low, ref.confidence_interval.high)
    assert ours.low < x.mean() < ours.high
    # int seed and None (documented seed 0) are reproducible
    assert bootstrap_interval(x, rng=3) == bootstrap_interval(x, rng=3)
    assert bootstrap_interval(x) == bootstrap_interval(x, rng=0)


@given(dyadic_samples(0, 12))
def test_never_crashes_on_degenerate_data(x):
    for res in (t_interval(x), bootstrap_interval(x, n_resamples=200)):
        if len(x) < 2:
            assert math.isnan(res.low) and math.isnan(res.high)
        elif len(set(x)) == 1:
            assert res.low == res.high == x[0]
        else:
            assert math.isnan(res.low) or res.low <= res.high


def test_degenerate_cases_documented():
    assert t_interval([]).n == 0 and math.isnan(t_interval([]).estimate)
    one = t_interval([2.5])
    assert one.estimate == 2.5 and math.isnan(one.low)
    assert bootstrap_interval([1.0, 1.0, 1.0]).as_list() == [1.0, 1.0]
    with pytest.raises(SpecError, match="`confidence`"):
        t_interval([1.0, 2.0], confidence=95)
    with pytest.raises(SpecError, match="`method`"):
        bootstrap_interval([1.0, 2.0], method="studentized")
    with pytest.raises(SpecError, match=r"`x\[0\]`"):
        bootstrap_interval([np.nan, 1.0])
