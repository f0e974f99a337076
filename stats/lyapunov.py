"""Lyapunov spectra from sequences of Jacobians (SCIENCE.md §5), in pure numpy.

The Benettin / QR method: start from Q = I, and at every step t form M = J[t] Q, factor
M = Q' R, accumulate log|R_ii| and carry Q'. The exponents are the accumulated logs divided
by the number of steps (nats per step), sorted descending. With Jacobians of an
input-driven system these are finite-time exponents of that driven system.

Any leading batch dims are allowed: (..., T, N, N) -> (..., N). The QR is done on the whole
stack of batch members at once (np.linalg.qr factors stacks), so the only Python loop is
over time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worlds.errors import SpecError

# Reference reading of SCIENCE.md §5. The study states |λ1| < 0.1 "marginal", λ1 < -0.1
# "sink", λ1 > 0.1 "chaotic", which leaves |λ1| = 0.1 exactly unlabelled.
# Decision: sink and chaotic are strict, marginal takes the closed band |λ1| <= 0.1.
MARGINAL_BAND = 0.1
# "selective contraction": marginal λ1 and mean(λ2..λN) < -0.3. It refines "marginal"
# (a marginal spectrum whose other directions contract strongly), so it takes precedence.
SELECTIVE_REST = -0.3

LABELS = ("sink", "marginal", "selective contraction", "chaotic")


def _as_jacobians(jacobians: object) -> np.ndarray:
    try:
        j = np.asarray(jacobians, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SpecError("jacobians", f"must be a real numeric array: {e}") from None
    if j.ndim < 3:
        raise SpecError("jacobians", f"must have shape (..., T, N, N), got shape {j.shape}")
    if j.shape[-1] != j.shape[-2]:
        raise SpecError("jacobians", f"last two dims must be equal (square Jacobians), got shape {j.shape}")
    if j.shape[-3] < 1 or j.shape[-1] < 1:
        raise SpecError("jacobians", f"needs at least one step and one dimension, got shape {j.shape}")
    return j


def lyapunov_spectrum(jacobians: object) -> np.ndarray:
    """Lyapunov exponents (nats/step, sorted descending) of a product of Jacobians.

    jacobians: (..., T, N, N); jacobians[..., t, :, :] maps a tangent vector at step t to
    step t+1. Returns (..., N) float64.

    A batch member whose Jacobians contain NaN or inf gets an all-NaN spectrum (a diverged
    network has no spectrum; it is not an input error). A direction that is collapsed
    exactly (R_ii = 0, a singular Jacobian) gets -inf, which is the correct limit.
    """
    j = _as_jacobians(jacobians)
    *batch, t_len, n, _ = j.shape
    flat = j.reshape(-1, t_len, n, n)  # (B, T, N, N)
    ok = np.isfinite(flat).all(axis=(1, 2, 3))  # (B,)
    good = flat[ok]
    q = np.broadcast_to(np.eye(n), (good.shape[0], n, n))  # (B', N, N)
    log_r = np.zeros((good.shape[0], n))  # (B', N)
    with np.errstate(divide="ignore"):
        for t in range(t_len):
            q, r = np.linalg.qr(good[:, t] @ q)
            log_r += np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1)))
    out = np.full((flat.shape[0], n), np.nan)
    out[ok] = -np.sort(-(log_r / t_len), axis=-1)
    return out.reshape(*batch, n)


def _as_spectrum(spectrum: object) -> np.ndarray:
    try:
        s = np.asarray(spectrum, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SpecError("spectrum", f"must be a real numeric array: {e}") from None
    if s.ndim < 1 or s.shape[-1] < 1:
        raise SpecError("spectrum", f"must have shape (..., N) with N >= 1, got shape {s.shape}")
    return s


def kaplan_yorke_dimension(spectrum: object) -> np.ndarray | float:
    """Kaplan-Yorke (Lyapunov) dimension of spectra (..., N) -> (...).

    With λ sorted descending and S_k = λ1 + ... + λk: j is the largest k with S_k >= 0 and
    D = j + S_j / |λ_{j+1}|; D = 0 when λ1 < 0 and D = N when S_N >= 0. The input is
    sorted here, so any order is accepted. NaN anywhere in a spectrum gives NaN.
    Returns a float for a single spectrum, else an array.
    """
    s = _as_spectrum(spectrum)
    n = s.shape[-1]
    lam = -np.sort(-s, axis=-1)  # (..., N) descending
    cum = np.cumsum(lam, axis=-1)  # (..., N)
    nonneg = cum >= 0
    # cum is decreasing once λ < 0, so "largest k with S_k >= 0" is the count of leading
    # non-negative sums; counting all non-negatives is equivalent and vectorises.
    j = nonneg.sum(axis=-1)  # (...,) in 0..N
    idx = np.clip(j, 1, n) - 1
    s_j = np.take_along_axis(cum, idx[..., None], axis=-1)[..., 0]
    nxt = np.take_along_axis(lam, np.clip(j, 0, n - 1)[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = s_j / np.abs(nxt)
    d = np.where(j == 0, 0.0, np.where(j == n, float(n), j + frac))
    d = np.where(np.isnan(lam).any(axis=-1), np.nan, d)
    # s_j finite over |λ| = inf is 0 (np gives that), a -inf exponent only caps the dimension.
    return float(d) if d.ndim == 0 else d


def lyapunov_label(lambda1: float, rest: Sequence[float] | np.ndarray = ()) -> str:
    """SCIENCE.md's reference reading of a spectrum; "" when λ1 is NaN.

    rest: λ2..λN. "selective contraction" (|λ1| <= 0.1 and mean(rest) < -0.3) refines
    "marginal"; with no rest (N = 1) a marginal spectrum stays "marginal".
    """
    try:
        lam1 = float(lambda1)
    except (TypeError, ValueError):
        raise SpecError("lambda1", f"must be a real number, got {lambda1!r}") from None
    try:
        r = np.asarray(rest, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise SpecError("rest", f"must be a sequence of real numbers, got {rest!r}") from None
    if math.isnan(lam1):
        return ""
    if lam1 > MARGINAL_BAND:
        return "chaotic"
    if lam1 < -MARGINAL_BAND:
        return "sink"
    if r.size and float(np.mean(r)) < SELECTIVE_REST:
        return "selective contraction"
    return "marginal"


@dataclass(frozen=True)
class SpectrumSummary:
    """Per-spectrum numbers reported per seed (SCIENCE.md §5)."""

    spectrum: tuple[float, ...]  # descending, nats/step
    lambda1: float
    gap: float  # λ1 - λ2; NaN when N = 1
    sum: float  # Σλ, ≈ mean log|det J|
    ky_dim: float
    label: str


def summarise_spectrum(spectrum: object) -> SpectrumSummary:
    """Summary of ONE spectrum (N,). NaN spectra give NaN numbers and an empty label."""
    s = _as_spectrum(spectrum)
    if s.ndim != 1:
        raise SpecError("spectrum", f"must be one spectrum of shape (N,), got shape {s.shape}")
    lam = -np.sort(-s)
    if np.isnan(lam).any():
        nan = float("nan")
        return SpectrumSummary(tuple(float(x) for x in s), nan, nan, nan, nan, "")
    return SpectrumSummary(
        spectrum=tuple(float(x) for x in lam),
        lambda1=float(lam[0]),
        gap=float(lam[0] - lam[1]) if lam.size > 1 else float("nan"),
        sum=float(lam.sum()),
        ky_dim=float(kaplan_yorke_dimension(lam)),
        label=lyapunov_label(lam[0], lam[1:]),
    )
