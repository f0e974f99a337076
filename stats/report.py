"""Result rows (one per seed) -> the JSON rows the service serves (issue 5).

Every table groups the rows of ONE experiment by the axis columns that define a
configuration (GROUP_COLUMNS), excludes rows flagged invalid (and non-finite values) from
every statistic, counts them, and corrects p-values with Holm and Benjamini-Hochberg across
all rows of the table (the family of comparisons the experiment reports). Outputs are
JSON-safe: NaN / inf -> None, numpy scalars -> Python numbers, intervals -> [lo, hi].

Resampling is reproducible: with rng=None (seed 0) or an int seed, every group gets a fresh
Generator from that seed, so a group's numbers do not depend on which other groups exist;
a Generator passed in is shared by the groups in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from stats._validate import DEFAULT_SEED
from stats.effect import effect_size, seeds_for_power, welch_test
from stats.intervals import bootstrap_interval, t_interval
from stats.multiple import benjamini_hochberg, holm
from stats.permutation import sign_flip_test, two_sample_permutation_test
from stats.summary import summarise_group
from worlds.errors import SpecError

# The axis columns that define a configuration group, in output order.
GROUP_COLUMNS: tuple[str, ...] = (
    "world",
    "world_params",
    "model",
    "hidden_dim",
    "mode",
    "time_cond",
    "lr",
    "batch_size",
    "steps",
    "n_train",
    "n_eval",
    "baseline_kind",
)
# Added to the group key when the column exists and is not null everywhere (Optuna search:
# each sampled configuration is its own group).
OPTIONAL_GROUP_COLUMNS: tuple[str, ...] = ("search_sample",)
NULL_ROLES = ("null", "null_iid")

Rng = int | np.random.Generator | None


# ----------------------------------------------------------------------------- helpers


def json_safe(obj: Any) -> Any:
    """Recursively: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray, pd.Series)):
        return [json_safe(v) for v in obj]
    if obj is None or obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, str):
        return obj
    return str(obj)


def group_columns(df: pd.DataFrame) -> list[str]:
    """GROUP_COLUMNS present in df, plus search_sample when present and not all null."""
    cols = [c for c in GROUP_COLUMNS if c in df.columns]
    cols += [c for c in OPTIONAL_GROUP_COLUMNS if c in df.columns and df[c].notna().any()]
    return cols


def _check(df: object, required: Iterable[str]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise SpecError("df", f"must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing and len(df):
        raise SpecError("df", f"is missing column(s) {missing}")
    return df.reset_index(drop=True)  # positional indexing below needs a unique index


def _valid(df: pd.DataFrame) -> np.ndarray:
    """The `valid` flag as bools (missing flag column: all valid; null flag: invalid)."""
    if "valid" not in df.columns:
        return np.ones(len(df), dtype=bool)
    return np.array([False if pd.isna(v) else bool(v) for v in df["valid"].to_numpy()], dtype=bool)


def _floats(df: pd.DataFrame, column: str) -> np.ndarray:
    if column not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _groups(df: pd.DataFrame, cols: list[str]) -> Iterable[tuple[dict[str, Any], pd.DataFrame]]:
    if not cols:
        yield {}, df
        return
    for key, sub in df.groupby(cols, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield dict(zip(cols, key, strict=True)), sub


def _group_rng(rng: Rng) -> Rng:
    """A fresh Generator per group for seeds (see module doc); a Generator is shared."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(DEFAULT_SEED if rng is None else rng)


def _first(sub: pd.DataFrame, column: str) -> Any:
    if column not in sub.columns or sub.empty:
        return None
    vals = sub[column].dropna()
    return vals.iloc[0] if len(vals) else None


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else math.nan


def _label_counts(sub: pd.DataFrame, column: str, ok: np.ndarray) -> dict[str, int]:
    if column not in sub.columns:
        return {}
    labels = [v for v in sub[column].to_numpy()[ok] if isinstance(v, str) and v]
    uniq: Iterable[Any]
    counts: Iterable[Any]
    uniq, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True) if labels else ([], [])
    return {str(k): int(c) for k, c in zip(uniq, counts, strict=True)}


def _adjust(rows: list[dict[str, Any]], p_key: str = "p_value") -> None:
    p = [r[p_key] if r[p_key] is not None else math.nan for r in rows]
    for r, h, b in zip(rows, holm(p), benjamini_hochberg(p), strict=True):
        r["p_holm"], r["p_bh"] = float(h), float(b)


def _interval(x: np.ndarray) -> list[float]:
    return t_interval(x).as_list()


# ----------------------------------------------------------------------------- ΔNLL


def delta_nll_table(
    df: pd.DataFrame, *, n_resamples: int = 9999, rng: Rng = None, bootstrap: bool = True
) -> list[dict[str, Any]]:
    """Per configuration group: n, n_invalid, mean, std, ci95 (t), ci95_bca, p_value
    (sign flip of mean ΔNLL > 0), exact, p_holm, p_bh (across all groups of the table).
    Group key fields are GROUP_COLUMNS (+ search_sample); world_role and world_family are
    added when present."""
    df = _check(df, ("world", "delta_nll"))
    if df.empty:
        return []
    cols = group_columns(df)
    ok_all = _valid(df)
    vals_all = _floats(df, "delta_nll")
    rows = []
    for key, sub in _groups(df, cols):
        idx = df.index.get_indexer(sub.index)
        s = summarise_group(
            vals_all[idx], valid=ok_all[idx], n_resamples=n_resamples, rng=_group_rng(rng),
            bootstrap=bootstrap,
        )
        row = dict(key)
        for extra in ("world_role", "world_family"):
            if extra in df.columns:
                row[extra] = _first(sub, extra)
        row.update(s.as_dict())
        rows.append(row)
    _adjust(rows)
    return json_safe(rows)


# ----------------------------------------------------------------------------- contrasts


def _per_seed(sub: pd.DataFrame) -> tuple[pd.Series, int]:
    """Valid finite ΔNLL by seed (duplicates averaged) and the number of rows excluded."""
    vals = _floats(sub, "delta_nll")
    keep = _valid(sub) & np.isfinite(vals)
    by_seed = pd.Series(vals[keep], index=sub["seed"].to_numpy()[keep]).groupby(level=0).mean()
    return by_seed, int((~keep).sum())


def contrasts_table(
    df: pd.DataFrame, *, n_resamples: int = 9999, rng: Rng = None, bootstrap: bool = True
) -> list[dict[str, Any]]:
    """Each structured world against each null / null_iid world of its family, per model
    configuration (GROUP_COLUMNS without world / world_params), ΔNLL paired by seed.

    Fields: world_family, struct_world, null_world, null_role, the configuration columns,
    world_params (the structured side's), null_world_params, n_pairs, n_struct, n_null,
    n_invalid, mean_diff, std_diff, ci95, ci95_bca, p_value (paired sign flip, struct >
    null), exact, p_two_sample (label permutation of all valid rows of each side), p_holm,
    p_bh, cohen_dz, seeds_for_80pct_power.

    world_params pairing: a structured and a null group are compared when their world
    overrides are equal, or when each world has exactly one override set in this
    configuration (overrides given per world, e.g. a parameter only one of them has).
    """
    df = _check(df, ("world", "world_role", "world_family", "seed", "delta_nll"))
    if df.empty:
        return []
    cols = group_columns(df)
    config_cols = [c for c in cols if c not in ("world", "world_params")]
    rows: list[dict[str, Any]] = []
    for config, sub in _groups(df, config_cols):
        sides = {}  # (world, world_params) -> (role, family, sub)
        for (world, wp), side in sub.groupby(["world", _wp_col(sub)], dropna=False, sort=True):
            sides[(world, wp)] = (_first(side, "world_role"), _first(side, "world_family"), side)
        n_params = pd.Series([w for w, _ in sides]).value_counts().to_dict()
        for (sw, swp), (srole, sfam, sside) in sides.items():
            if srole != "structured":
                continue
            for (nw, nwp), (nrole, nfam, nside) in sides.items():
                if nrole not in NULL_ROLES or nfam != sfam:
                    continue
                if not (swp == nwp or (n_params[sw] == 1 and n_params[nw] == 1)):
                    continue
                row = {"world_family": sfam, "struct_world": sw, "null_world": nw, "null_role": nrole}
                row.update(config)
                if "world_params" in cols:
                    row["world_params"], row["null_world_params"] = swp, nwp
                row.update(_contrast(sside, nside, n_resamples, _group_rng(rng), bootstrap))
                rows.append(row)
    _adjust(rows)
    return json_safe(rows)


def _wp_col(sub: pd.DataFrame) -> str | pd.Series:
    return "world_params" if "world_params" in sub.columns else pd.Series("", index=sub.index)


def _contrast(
    struct: pd.DataFrame, null: pd.DataFrame, n_resamples: int, gen: Rng, bootstrap: bool
) -> dict[str, Any]:
    s, s_bad = _per_seed(struct)
    n, n_bad = _per_seed(null)
    seeds = s.index.intersection(n.index).sort_values()
    d = (s.loc[seeds] - n.loc[seeds]).to_numpy(dtype=np.float64)  # (n_pairs,)
    nan = math.nan
    out: dict[str, Any] = {
        "n_pairs": int(d.size), "n_struct": int(s.size), "n_null": int(n.size),
        "n_invalid": s_bad + n_bad,
        "mean_diff": float(d.mean()) if d.size else nan,
        "std_diff": float(np.std(d, ddof=1)) if d.size > 1 else nan,
        "ci95": _interval(d),
        "ci95_bca": bootstrap_interval(d, n_resamples=n_resamples, rng=gen).as_list() if bootstrap else [nan, nan],
        "p_value": nan, "exact": False, "p_two_sample": nan,
    }
    if d.size:
        test = sign_flip_test(d, "greater", n_resamples, gen)
        out["p_value"], out["exact"] = test.p_value, test.exact
    if s.size and n.size:
        out["p_two_sample"] = two_sample_permutation_test(s.to_numpy(), n.to_numpy(), "greater", n_resamples, gen).p_value
    dz = effect_size(d).value
    out["cohen_dz"] = dz
    out["seeds_for_80pct_power"] = seeds_for_power(dz, 0.8, 0.05, "greater")
    return out


# ----------------------------------------------------------------------------- Lyapunov


def _mean_spectrum(sub: pd.DataFrame, ok: np.ndarray) -> list[float] | None:
    if "lyap_spectrum" not in sub.columns:
        return None
    specs = []
    for v in sub["lyap_spectrum"].to_numpy()[ok]:
        if v is None or isinstance(v, (float, str)):
            continue
        arr = np.asarray(v, dtype=np.float64).ravel()
        if arr.size and np.isfinite(arr).all():
            specs.append(arr)
    if not specs:
        return None
    # Equal lengths within a group (same cell and H); keep the most common length if not.
    lengths = pd.Series([a.size for a in specs]).value_counts()
    n = int(lengths.index[0])
    return np.mean([a for a in specs if a.size == n], axis=0).tolist()


def lyapunov_table(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per configuration group: n (seeds with a finite λ1), n_invalid (rows flagged
    invalid), lambda1_mean, lambda1_std, lambda1_ci95 (t), gap_mean, sum_mean, ky_dim_mean,
    label_counts {label: count}, mean_spectrum (elementwise mean of the seeds' spectra)."""
    df = _check(df, ("world", "lyap_1"))
    if df.empty:
        return []
    rows = []
    for key, sub in _groups(df, group_columns(df)):
        ok = _valid(sub)
        lam1 = _floats(sub, "lyap_1")[ok]
        lam1 = lam1[np.isfinite(lam1)]
        row = dict(key)
        row.update({
            "n": int(lam1.size),
            "n_invalid": int((~ok).sum()),
            "lambda1_mean": float(lam1.mean()) if lam1.size else math.nan,
            "lambda1_std": float(np.std(lam1, ddof=1)) if lam1.size > 1 else math.nan,
            "lambda1_ci95": _interval(lam1),
            "gap_mean": _mean(_floats(sub, "lyap_gap")[ok]),
            "sum_mean": _mean(_floats(sub, "lyap_sum")[ok]),
            "ky_dim_mean": _mean(_floats(sub, "lyap_ky_dim")[ok]),
            "label_counts": _label_counts(sub, "lyap_label", ok),
            "mean_spectrum": _mean_spectrum(sub, ok),
        })
        rows.append(row)
    return json_safe(rows)


def lyapunov_comparisons(
    df: pd.DataFrame, *, n_resamples: int = 9999, rng: Rng = None
) -> list[dict[str, Any]]:
    """λ1 of model types compared within groups that differ only in `model`: for each pair
    model_a < model_b (alphabetical) the group fields without `model`, n_a, n_b,
    lambda1_mean_a, lambda1_mean_b, lambda1_diff (a - b), p_welch (two-sided Welch t-test),
    p_permutation (two-sided label permutation), and p_holm / p_bh of p_permutation across
    all comparisons of the table."""
    df = _check(df, ("world", "model", "lyap_1"))
    if df.empty:
        return []
    cols = [c for c in group_columns(df) if c != "model"]
    rows = []
    for key, sub in _groups(df, cols):
        by_model: dict[Any, np.ndarray] = {}
        for model, msub in sub.groupby("model", sort=True):
            lam1 = _floats(msub, "lyap_1")[_valid(msub)]
            by_model[model] = lam1[np.isfinite(lam1)]
        models = sorted(by_model)
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                xa, xb = by_model[a], by_model[b]
                row = {"model_a": a, "model_b": b}
                row.update(key)
                nan = math.nan
                row.update({
                    "n_a": int(xa.size), "n_b": int(xb.size),
                    "lambda1_mean_a": float(xa.mean()) if xa.size else nan,
                    "lambda1_mean_b": float(xb.mean()) if xb.size else nan,
                    "lambda1_diff": float(xa.mean() - xb.mean()) if xa.size and xb.size else nan,
                    "p_welch": welch_test(xa, xb).p_value,
                    "p_permutation": (
                        two_sample_permutation_test(xa, xb, "two-sided", n_resamples, _group_rng(rng)).p_value
                        if xa.size and xb.size else nan
                    ),
                })
                rows.append(row)
    _adjust(rows, "p_permutation")
    return json_safe(rows)


# ----------------------------------------------------------------------------- coasting


def dynamics_table(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per configuration group, NaN-aware (means over valid rows with finite values):
    n, n_invalid, lambda1_mean;
    coast_n, coast_retention_mean, coast_retention_ci95 (t), coast_autocorr_mean,
    coast_mean_abs_mean, coast_decay_mean, coast_label_counts;
    halluc_n, halluc_var_mean, halluc_mean_abs_mean, halluc_label_counts
    (hallucination is measured on null-trained models, so it is empty elsewhere)."""
    df = _check(df, ("world",))
    if df.empty:
        return []
    rows = []
    for key, sub in _groups(df, group_columns(df)):
        ok = _valid(sub)
        ret = _floats(sub, "coast_retention")[ok]
        ret = ret[np.isfinite(ret)]
        hvar = _floats(sub, "halluc_var")[ok]
        row = dict(key)
        for extra in ("world_role", "world_family"):
            if extra in df.columns:
                row[extra] = _first(sub, extra)
        row.update({
            "n": int(ok.sum()),
            "n_invalid": int((~ok).sum()),
            "lambda1_mean": _mean(_floats(sub, "lyap_1")[ok]),
            "coast_n": int(ret.size),
            "coast_retention_mean": float(ret.mean()) if ret.size else math.nan,
            "coast_retention_ci95": _interval(ret),
            "coast_autocorr_mean": _mean(_floats(sub, "coast_autocorr")[ok]),
            "coast_mean_abs_mean": _mean(_floats(sub, "coast_mean_abs")[ok]),
            "coast_decay_mean": _mean(_floats(sub, "coast_decay")[ok]),
            "coast_label_counts": _label_counts(sub, "coast_label", ok),
            "halluc_n": int(np.isfinite(hvar).sum()),
            "halluc_var_mean": _mean(hvar),
            "halluc_mean_abs_mean": _mean(_floats(sub, "halluc_mean_abs")[ok]),
            "halluc_label_counts": _label_counts(sub, "halluc_label", ok),
        })
        rows.append(row)
    return json_safe(rows)
