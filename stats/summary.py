"""Per-group summaries of per-seed values, the numbers the service reports for one group."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

from stats._validate import Alternative, _raw, check_alternative, make_rng
from stats.intervals import bootstrap_interval, t_interval
from stats.permutation import sign_flip_test
from worlds.errors import SpecError


@dataclass(frozen=True)
class GroupSummary:
    """Summary of one group of seeds. Rows flagged invalid and non-finite values are excluded
    from every number and counted in n_invalid. With n = 0 every number is NaN."""

    n: int
    n_invalid: int
    mean: float
    std: float  # sample SD (ddof 1); NaN when n < 2
    ci95: tuple[float, float]  # t interval at `confidence` (named for the default 0.95)
    ci95_bca: tuple[float, float]  # BCa bootstrap interval (NaN pair when not computed)
    p_value: float  # sign-flip test of mean > 0 (or `alternative`)
    exact: bool  # whether p_value is exact (all 2^n sign patterns)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        d["ci95_bca"] = list(self.ci95_bca)
        return d


def _split_rows(values: object, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid flags) from numbers, row mappings (row[column], row["valid"]) or a
    DataFrame-like object with those columns (duck-typed: pandas is not imported here)."""
    if hasattr(values, "columns"):
        frame = cast(Any, values)  # a DataFrame, duck-typed
        if column not in frame.columns:
            raise SpecError("values", f"has no column {column!r}")
        vals = _floats(frame[column].to_numpy(dtype=float, na_value=math.nan), "values")
        if "valid" not in frame.columns:
            return vals, np.ones(vals.shape, dtype=bool)
        flags = [v is not None and v == v and bool(v) for v in frame["valid"].to_numpy()]
        return vals, np.asarray(flags, dtype=bool)
    if isinstance(values, Sequence) and values and isinstance(values[0], Mapping):
        raw: list[Any] = []
        flags = []
        for i, row in enumerate(values):
            if not isinstance(row, Mapping):
                raise SpecError(f"values[{i}]", f"must be a row mapping like values[0], got {type(row).__name__}")
            if column not in row:
                raise SpecError(f"values[{i}]", f"has no column {column!r}")
            v = row[column]
            raw.append(math.nan if v is None else v)
            flag = row.get("valid", True)
            flags.append(flag is not None and flag == flag and bool(flag))
        return _floats(raw, "values"), np.asarray(flags, dtype=bool)
    arr = _floats(values, "values")
    return arr, np.ones(arr.shape, dtype=bool)


def _floats(values: object, name: str) -> np.ndarray:
    return _raw(values, name, expected="numbers or rows with a numeric column")


def summarise_group(
    values: object,
    *,
    valid: object | None = None,
    column: str = "delta_nll",
    alternative: Alternative = "greater",
    confidence: float = 0.95,
    n_resamples: int = 9999,
    rng: int | np.random.Generator | None = None,
    bootstrap: bool = True,
) -> GroupSummary:
    """Summarise one group: n, n_invalid, mean, SD, t and BCa intervals, sign-flip p-value.

    values: per-seed numbers, or rows (mappings, or a DataFrame) from which `column` and
    the "valid" flag (absent: valid; null: invalid) are read.
    valid: optional flags (same length), combined with the rows' own flags.
    rng (int seed, Generator, or None for seed 0) drives the Monte Carlo sign flips
    (n > 20) and the bootstrap.
    bootstrap=False skips the BCa interval (NaN pair), which is the slow part.
    """
    alternative = check_alternative(alternative)
    vals, flags = _split_rows(values, column)
    if valid is not None:
        v = np.asarray(valid).reshape(-1)
        if v.shape != vals.shape:
            raise SpecError("valid", f"must have one flag per value ({v.size} != {vals.size})")
        flags = flags & v.astype(bool)
    keep = flags & np.isfinite(vals)
    x = vals[keep]
    n = int(x.size)
    n_invalid = int(vals.size - n)
    nan = math.nan
    if n == 0:
        return GroupSummary(0, n_invalid, nan, nan, (nan, nan), (nan, nan), nan, False)
    gen = make_rng(rng)
    ti = t_interval(x, confidence)
    bca = bootstrap_interval(x, confidence, "BCa", n_resamples, gen) if bootstrap else None
    test = sign_flip_test(x, alternative, n_resamples, gen)
    return GroupSummary(
        n=n,
        n_invalid=n_invalid,
        mean=float(np.mean(x)),
        std=float(np.std(x, ddof=1)) if n > 1 else nan,
        ci95=(ti.low, ti.high),
        ci95_bca=(bca.low, bca.high) if bca is not None else (nan, nan),
        p_value=test.p_value,
        exact=test.exact,
    )
