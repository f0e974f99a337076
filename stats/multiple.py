"""Multiple-comparison adjustments across the comparisons one experiment reports.

NaN (or None) entries are comparisons that could not be made (no valid seeds); they pass
through as NaN and are not counted in the family size m.
"""

from __future__ import annotations

import numpy as np

from worlds.errors import SpecError


def _as_pvalues(pvalues: object) -> np.ndarray:
    try:
        p = np.asarray(pvalues, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SpecError("pvalues", f"must be a sequence of numbers in [0, 1]: {e}") from None
    if p.ndim == 0:
        p = p.reshape(1)
    if p.ndim != 1:
        raise SpecError("pvalues", f"must be one-dimensional, got shape {p.shape}")
    bad = ~np.isnan(p) & ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SpecError(f"pvalues[{i}]", f"must be in [0, 1] or NaN, got {p[i]!r}")
    return p


def _family(pvalues: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The validated p-values, an all-NaN output of their shape, and the indices of the
    non-NaN ones (the family) in ascending order of p (stable for ties)."""
    p = _as_pvalues(pvalues)
    ok = np.flatnonzero(~np.isnan(p))
    return p, np.full(p.shape, np.nan), ok[np.argsort(p[ok], kind="stable")]


def holm(pvalues: object) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), same order as the input.

    With the m finite p-values sorted ascending p_(1) <= ... <= p_(m):
    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p, out, order = _family(pvalues)
    m = order.size
    if m == 0:
        return out
    scaled = (m - np.arange(m)) * p[order]  # (m,) factors m, m-1, ..., 1
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def benjamini_hochberg(pvalues: object) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), input order.

    adj_(i) = min_{j >= i} min(1, m / j * p_(j)).
    """
    p, out, order = _family(pvalues)
    m = order.size
    if m == 0:
        return out
    scaled = m / np.arange(1, m + 1) * p[order]  # (m,)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out
