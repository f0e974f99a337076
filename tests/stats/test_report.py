"""stats.report tables on a hand-built result frame with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from stats import (
    benjamini_hochberg,
    effect_size,
    holm,
    seeds_for_power,
    sign_flip_test,
    t_interval,
    two_sample_permutation_test,
)
from stats.report import (
    GROUP_COLUMNS,
    contrasts_table,
    delta_nll_table,
    dynamics_table,
    json_safe,
    lyapunov_comparisons,
    lyapunov_table,
)
from trainers.config import RESULT_COLUMNS
from worlds.errors import SpecError

FAMILY = {"E3": "E3_osc", "E1": "E1_drift"}
ROLE = {"struct": "structured", "null": "null", "null_iid": "null_iid", "decoy_sine": "decoy"}
NAN = float("nan")


def row(world: str, seed: int, delta: float, *, valid: bool | None = True, model: str = "gru",
        world_params: str = "{}", **extra) -> dict:
    prefix, _, kind = world.partition("_")[0], None, world.split("_", 2)[2]
    r = {name: (NAN if t == "float" else 0 if t == "int" else "" if t == "str" else None)
         for name, t in RESULT_COLUMNS.items()}
    r.update(
        world=world, world_role=ROLE[kind], world_family=FAMILY[prefix], world_params=world_params,
        model=model, hidden_dim=4, mode="full", time_cond="full_time", lr=1e-3, batch_size=8,
        steps=10, n_train=64, n_eval=32, seed=seed, data_seed=0, baseline_kind="smart",
        delta_nll=delta, valid=valid, experiment="exp1", spec_hash="h", config_id=f"{world}-{model}",
        search_sample=None,
    )
    r.update(extra)
    return r


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rows = []
    struct = [0.5, 0.25, 0.75, 1.0, 9.0]  # seed 4 is flagged invalid
    null = [0.25, 0.0, 0.5, -0.25, 0.5]
    for s in range(5):
        rows.append(row("E3_osc_struct", s, struct[s], valid=s != 4,
                        lyap_1=[-0.5, -0.25, 0.0, -0.75, 5.0][s], lyap_gap=0.5, lyap_sum=-2.0,
                        lyap_ky_dim=0.0, lyap_label=["sink", "sink", "marginal", "sink", "chaotic"][s],
                        lyap_spectrum=[[-0.5, -1, -1.5, -2.0], [-0.25, -1, -1, -2], [0.0, -1, -1, -2],
                                       [-0.75, -1, -1, -2], [5, 5, 5, 5]][s],
                        coast_retention=[0.75, 0.25, NAN, 1.0, 3.0][s], coast_label=["inertial", "dissipative", "", "inertial", "inertial"][s],
                        coast_autocorr=0.5, coast_mean_abs=0.25, coast_decay=-0.1))
        rows.append(row("E3_osc_null", s, null[s], halluc_var=[0.5, 0.0, 0.25, 0.001, 0.0][s],
                        halluc_mean_abs=0.1, halluc_label=["hallucination", "nihilism", "hallucination", "nihilism", "nihilism"][s]))
        rows.append(row("E3_osc_struct", s, 0.1 * (s + 1), model="lstm", lyap_1=[0.25, 0.5, 0.0, 0.75, 1.0][s],
                        lyap_spectrum=[0.1 * s] * 8, lyap_label="chaotic"))
    for s in range(3):
        rows.append(row("E3_osc_null_iid", s, 0.0))
    for v, shift in (("0.03", 0.0), ("0.05", 1.0)):
        wp = json.dumps({"v": float(v)})
        for s in range(4):
            rows.append(row("E1_drift_struct", s, shift + 0.5 + s, world_params=wp))
            rows.append(row("E1_drift_null", s, float(s), world_params=wp, valid=None if s == 3 and shift else True))
    rows.append(row("E1_drift_decoy_sine", 0, 0.25))
    return pd.DataFrame(rows)


def _find(rows, **key):
    hits = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
    assert len(hits) == 1, (key, hits)
    return hits[0]


def test_delta_nll_table_groups_counts_and_corrections(frame):
    rows = delta_nll_table(frame, n_resamples=500)
    json.dumps(rows, allow_nan=False)  # JSON-safe
    assert len(rows) == 9  # 7 gru worlds/params + lstm struct (+ decoy)
    for r in rows:
        assert set(GROUP_COLUMNS) <= set(r) and "search_sample" not in r  # all-null: not a key
    e3 = _find(rows, world="E3_osc_struct", model="gru")
    x = [0.5, 0.25, 0.75, 1.0]
    assert (e3["n"], e3["n_invalid"]) == (4, 1)
    assert e3["mean"] == pytest.approx(0.625) and e3["std"] == pytest.approx(np.std(x, ddof=1))
    assert e3["ci95"] == pytest.approx(t_interval(x).as_list())
    assert e3["p_value"] == 1 / 16 and e3["exact"] is True
    assert e3["world_role"] == "structured" and e3["world_family"] == "E3_osc"
    assert isinstance(e3["hidden_dim"], int) and isinstance(e3["lr"], float)
    assert e3["ci95_bca"][0] <= e3["mean"] <= e3["ci95_bca"][1]
    e1n = _find(rows, world="E1_drift_null", world_params='{"v": 0.05}')
    assert (e1n["n"], e1n["n_invalid"]) == (3, 1)  # valid=None counts as invalid
    iid = _find(rows, world="E3_osc_null_iid")
    assert iid["p_value"] == 1.0 and iid["ci95"] == [0.0, 0.0]  # constant zeros
    p = [r["p_value"] for r in rows]
    assert [r["p_holm"] for r in rows] == pytest.approx(holm(p).tolist())
    assert [r["p_bh"] for r in rows] == pytest.approx(benjamini_hochberg(p).tolist())


def test_contrasts_pair_by_seed_within_family_and_params(frame):
    rows = contrasts_table(frame, n_resamples=500)
    json.dumps(rows, allow_nan=False)
    # E3: struct vs null and vs null_iid; E1: only equal world_params pair; no decoy, no lstm
    assert len(rows) == 4
    assert {(r["struct_world"], r["null_world"]) for r in rows} == {
        ("E3_osc_struct", "E3_osc_null"), ("E3_osc_struct", "E3_osc_null_iid"),
        ("E1_drift_struct", "E1_drift_null"),
    }
    c = _find(rows, struct_world="E3_osc_struct", null_world="E3_osc_null")
    d = [0.25, 0.25, 0.25, 1.25]  # seeds 0-3 (seed 4 invalid on the struct side)
    assert c["n_pairs"] == 4 and c["n_struct"] == 4 and c["n_null"] == 5 and c["n_invalid"] == 1
    assert c["mean_diff"] == pytest.approx(0.5) and c["ci95"] == pytest.approx(t_interval(d).as_list())
    assert c["p_value"] == sign_flip_test(d).p_value == 1 / 16 and c["exact"] is True
    assert c["p_two_sample"] == two_sample_permutation_test([0.5, 0.25, 0.75, 1.0], [0.25, 0.0, 0.5, -0.25, 0.5]).p_value
    assert c["cohen_dz"] == pytest.approx(effect_size(d).value)
    assert c["seeds_for_80pct_power"] == seeds_for_power(effect_size(d).value)
    assert c["null_role"] == "null" and c["model"] == "gru" and "world" not in c
    iid = _find(rows, null_world="E3_osc_null_iid")
    assert iid["n_pairs"] == 3 and iid["mean_diff"] == pytest.approx(0.5)
    e1 = _find(rows, struct_world="E1_drift_struct", world_params='{"v": 0.05}')
    assert e1["null_world_params"] == '{"v": 0.05}'
    assert e1["n_pairs"] == 3 and e1["mean_diff"] == pytest.approx(1.5)  # seed 3 null invalid
    assert e1["cohen_dz"] is None and e1["seeds_for_80pct_power"] == 2  # constant diff: d_z = inf
    p = [r["p_value"] for r in rows]
    assert [r["p_holm"] for r in rows] == pytest.approx(holm(p).tolist())
    assert [r["p_bh"] for r in rows] == pytest.approx(benjamini_hochberg(p).tolist())


def test_lyapunov_table_and_model_comparison(frame):
    rows = lyapunov_table(frame)
    json.dumps(rows, allow_nan=False)
    g = _find(rows, world="E3_osc_struct", model="gru")
    lam = [-0.5, -0.25, 0.0, -0.75]
    assert (g["n"], g["n_invalid"]) == (4, 1)
    assert g["lambda1_mean"] == pytest.approx(-0.375) and g["lambda1_ci95"] == pytest.approx(t_interval(lam).as_list())
    assert g["gap_mean"] == 0.5 and g["sum_mean"] == -2.0 and g["ky_dim_mean"] == 0.0
    assert g["label_counts"] == {"marginal": 1, "sink": 3}  # the invalid "chaotic" is excluded
    assert g["mean_spectrum"] == pytest.approx([-0.375, -1.0, -1.125, -2.0])
    null = _find(rows, world="E3_osc_null")
    assert null["n"] == 0 and null["lambda1_mean"] is None and null["mean_spectrum"] is None
    comps = lyapunov_comparisons(frame, n_resamples=500)
    assert len(comps) == 1
    c = comps[0]
    la = [0.25, 0.5, 0.0, 0.75, 1.0]
    assert (c["model_a"], c["model_b"], c["world"]) == ("gru", "lstm", "E3_osc_struct")
    assert (c["n_a"], c["n_b"]) == (4, 5) and "model" not in c
    assert c["lambda1_diff"] == pytest.approx(-0.375 - np.mean(la))
    assert c["p_welch"] == pytest.approx(sps.ttest_ind(lam, la, equal_var=False).pvalue)
    assert c["p_permutation"] == two_sample_permutation_test(lam, la, "two-sided").p_value
    assert c["p_holm"] == c["p_permutation"]  # a family of one


def test_dynamics_table(frame):
    rows = dynamics_table(frame)
    json.dumps(rows, allow_nan=False)
    g = _find(rows, world="E3_osc_struct", model="gru")
    assert g["coast_n"] == 3 and g["coast_retention_mean"] == pytest.approx(2 / 3)  # NaN and invalid dropped
    assert g["coast_retention_ci95"] == pytest.approx(t_interval([0.75, 0.25, 1.0]).as_list())
    assert g["coast_label_counts"] == {"dissipative": 1, "inertial": 2}
    assert g["coast_autocorr_mean"] == 0.5 and g["halluc_n"] == 0 and g["halluc_var_mean"] is None
    n = _find(rows, world="E3_osc_null")
    assert n["halluc_n"] == 5 and n["halluc_var_mean"] == pytest.approx(0.751 / 5)
    assert n["halluc_label_counts"] == {"hallucination": 2, "nihilism": 3}
    assert n["coast_retention_ci95"] == [None, None]


def test_search_sample_splits_groups_and_edge_inputs(frame):
    f = frame[frame["world"] == "E3_osc_null"].copy()
    f["search_sample"] = [0, 1, 0, 1, 0]
    rows = delta_nll_table(f, n_resamples=200)
    assert [(r["search_sample"], r["n"]) for r in rows] == [(0, 3), (1, 2)]
    assert delta_nll_table(frame.iloc[:0]) == [] and contrasts_table(frame.iloc[:0]) == []
    with pytest.raises(SpecError, match="`df`"):
        delta_nll_table(frame.drop(columns=["delta_nll"]))
    with pytest.raises(SpecError, match="`df`"):
        lyapunov_table([{"world": "x"}])


def test_json_safe():
    out = json_safe({"a": np.float32(1.5), "b": [np.nan, np.inf, np.int64(3)], "c": (np.bool_(True), None),
                     "d": np.array([1.0, np.nan])})
    assert out == {"a": 1.5, "b": [None, None, 3], "c": [True, None], "d": [1.0, None]}
    assert type(out["b"][2]) is int and not math.isnan(out["a"])
