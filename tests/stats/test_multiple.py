"""holm / benjamini_hochberg against statsmodels and scipy.stats.false_discovery_control."""

from __future__ import annotations

import gc
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from stats import benjamini_hochberg, holm
from worlds.errors import SpecError

# p-values with ties, exact 0 and 1, and repeated values
pvalue = st.one_of(st.floats(0, 1, allow_nan=False), st.sampled_from([0.0, 0.01, 0.05, 0.5, 1.0]))
pvalues = st.lists(pvalue, min_size=1, max_size=30)


@given(pvalues)
def test_holm_matches_statsmodels(p):
    # statsmodels' holm branch calls gc.collect() (~50 ms with a big heap); skipping that
    # housekeeping does not change its arithmetic.
    with mock.patch.object(gc, "collect", return_value=0):
        expected = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(holm(p), expected, rtol=1e-12, atol=1e-15)


@given(pvalues)
def test_bh_matches_statsmodels_and_scipy(p):
    ours = benjamini_hochberg(p)
    np.testing.assert_allclose(ours, multipletests(p, method="fdr_bh")[1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours, sps.false_discovery_control(p, method="bh"), rtol=1e-12, atol=1e-15)


@given(pvalues, st.lists(st.booleans(), min_size=30, max_size=30))
def test_nan_entries_pass_through_and_leave_the_family(p, holes):
    with_nan = [np.nan if h else v for v, h in zip(p, holes, strict=False)]
    finite = [v for v in with_nan if not np.isnan(v)]
    for fn in (holm, benjamini_hochberg):
        out = fn(with_nan)
        assert np.isnan(out).tolist() == np.isnan(with_nan).tolist()
        # the family is the finite entries only (oracle checks of fn itself are above)
        np.testing.assert_array_equal(out[~np.isnan(out)], fn(finite))


def test_known_values_and_edge_cases():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03]), [0.03, 0.04, 0.04])
    assert np.isnan(holm([None, np.nan])).all()
    assert holm([]).shape == (0,)
    with pytest.raises(SpecError, match=r"`pvalues\[1\]`"):
        holm([0.5, 1.5])
    with pytest.raises(SpecError, match="`pvalues`"):
        benjamini_hochberg([[0.1, 0.2]])
