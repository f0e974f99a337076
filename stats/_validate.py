"""Input validation shared by the public stats functions.

Every public function validates first and hands plain float64 arrays to its worker, so
the workers never see lists, NaNs or bad options. Errors are `SpecError(field, message)`
(a ValueError) naming the argument, like the rest of worldsweep.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from worlds.errors import SpecError

Alternative = Literal["greater", "less", "two-sided"]
NanPolicy = Literal["raise", "omit"]

ALTERNATIVES = ("greater", "less", "two-sided")
NAN_POLICIES = ("raise", "omit")

# rng=None means this seed, so that every statistic is reproducible by default (a
# published p-value must not change when the report is recomputed).
DEFAULT_SEED = 0


def as_sample(
    x: object, name: str, *, nan_policy: NanPolicy = "raise", min_size: int = 1
) -> np.ndarray:
    """A 1-D float64 array of finite values, or SpecError naming `name`."""
    if nan_policy not in NAN_POLICIES:
        raise SpecError("nan_policy", f"must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SpecError(name, f"must be a sequence of real numbers: {e}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise SpecError(name, f"must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        if nan_policy == "raise":
            i = int(np.flatnonzero(bad)[0])
            raise SpecError(
                f"{name}[{i}]", f"must be finite, got {arr[i]!r} (pass nan_policy='omit' to drop)"
            )
        arr = arr[~bad]
    if arr.size < min_size:
        raise SpecError(name, f"needs at least {min_size} finite value(s), got {arr.size}")
    return arr


def check_alternative(alternative: str) -> Alternative:
    if alternative not in ALTERNATIVES:
        raise SpecError("alternative", f"must be one of {list(ALTERNATIVES)}, got {alternative!r}")
    return alternative  # type: ignore[return-value]


def check_confidence(confidence: float) -> float:
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise SpecError("confidence", f"must be a number in (0, 1), got {confidence!r}") from None
    if not 0.0 < c < 1.0:
        raise SpecError("confidence", f"must be in (0, 1), got {confidence!r}")
    return c


def check_n_resamples(n_resamples: int) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise SpecError("n_resamples", f"must be an integer >= 1, got {n_resamples!r}")
    if n_resamples < 1:
        raise SpecError("n_resamples", f"must be >= 1, got {n_resamples}")
    return int(n_resamples)


def check_probability(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(name, f"must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < v < 1.0 or math.isnan(v):
        raise SpecError(name, f"must be in (0, 1), got {value!r}")
    return v


def make_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed, a Generator (used as is), or None (DEFAULT_SEED)."""
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise SpecError("rng", f"must be a non-negative int seed, a numpy Generator or None, got {rng!r}")


def paired_differences(a: object, b: object, *, nan_policy: NanPolicy = "raise") -> np.ndarray:
    """a - b for paired samples of equal length; with nan_policy="omit" a pair is dropped
    when either side is non-finite (dropping per side would misalign the pairs)."""
    if nan_policy not in NAN_POLICIES:
        raise SpecError("nan_policy", f"must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")
    ra = _raw(a, "a")
    rb = _raw(b, "b")
    if ra.size != rb.size:
        raise SpecError("b", f"must have the same length as `a` when paired ({rb.size} != {ra.size})")
    if nan_policy == "raise":
        as_sample(ra, "a", min_size=0)
        as_sample(rb, "b", min_size=0)
    keep = np.isfinite(ra) & np.isfinite(rb)
    return ra[keep] - rb[keep]


def _raw(x: object, name: str, expected: str = "a sequence of real numbers") -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SpecError(name, f"must be {expected}: {e}") from None
    if arr.ndim > 1:
        raise SpecError(name, f"must be one-dimensional, got shape {arr.shape}")
    return arr.reshape(-1)
