"""summarise_group: exclusion of invalid rows, and each number against its own oracle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stats import bootstrap_interval, sign_flip_test, summarise_group, t_interval


def test_summary_of_rows_excludes_invalid_and_non_finite():
    rows = [
        {"delta_nll": 0.5, "valid": True},
        {"delta_nll": 0.25, "valid": True},
        {"delta_nll": 1.0, "valid": True},
        {"delta_nll": 9.0, "valid": False},  # flagged invalid
        {"delta_nll": None, "valid": True},  # missing value
        {"delta_nll": float("inf"), "valid": True},
    ]
    s = summarise_group(rows)
    x = [0.5, 0.25, 1.0]
    assert (s.n, s.n_invalid) == (3, 3)
    assert s.mean == pytest.approx(np.mean(x)) and s.std == pytest.approx(np.std(x, ddof=1))
    assert s.ci95 == (t_interval(x).low, t_interval(x).high)
    assert s.p_value == sign_flip_test(x).p_value == 1 / 8 and s.exact
    assert s == summarise_group([0.5, 0.25, 1.0, 9.0, np.nan, np.inf], valid=[1, 1, 1, 0, 1, 1])
    assert s == summarise_group(pd.DataFrame(rows))
    d = s.as_dict()
    assert d["ci95"] == list(s.ci95) and d["n_invalid"] == 3


def test_summary_bca_uses_the_shared_generator():
    x = np.random.default_rng(1).normal(0.2, 1, 12)
    s = summarise_group(x, rng=5)
    bca = bootstrap_interval(x, rng=np.random.default_rng(5))
    assert s.ci95_bca == (bca.low, bca.high)
    assert summarise_group(x, bootstrap=False).ci95_bca[0] != summarise_group(x, bootstrap=False).ci95_bca[0]  # NaN


def test_summary_degenerate_groups():
    empty = summarise_group([{"delta_nll": 1.0, "valid": False}])
    assert empty.n == 0 and empty.n_invalid == 1 and math.isnan(empty.mean) and math.isnan(empty.p_value)
    one = summarise_group([0.3])
    assert one.n == 1 and one.mean == 0.3 and math.isnan(one.std) and one.p_value == 0.5
    const = summarise_group([0.5] * 4)
    assert const.ci95 == (0.5, 0.5) and const.ci95_bca == (0.5, 0.5) and const.p_value == 1 / 16
    big = summarise_group(np.linspace(-0.2, 1.0, 25), n_resamples=999)
    assert not big.exact and big.n == 25
