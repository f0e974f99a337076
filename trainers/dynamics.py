"""What dynamics a trained network learned (SCIENCE.md §5): Lyapunov spectra, coasting,
hallucination. Everything is batched over K members (seeds) × sequences.

Decisions (each documented where it is implemented):

* Precision: trajectories, Jacobians and QR run in float64 on the params' device, whatever
  dtype the model trained in; the exponents are sums of many logs and float32 QR would
  drift.
* LSTM spectra have 2H exponents (the state is (h, c)); see trainers.jacobians.
* Lyapunov uses the first `config.lyap_sequences` evaluation sequences (all of them when
  fewer exist). Each sequence gets its own Benettin run and its own sorted spectrum; a
  member's spectrum is the mean over sequences of these sorted spectra (so λ1 is the mean
  per-sequence λ1).
* Short sequences (T < warm-up + measured steps, e.g. E1 with T = 64): we do not drive past
  the data (zero input would measure the coasting system, not the driven one, and mixing
  the two regimes makes the number mean neither). Instead `lyapunov_window` shrinks the
  warm-up to min(warmup, T // 4) and measures the remaining steps, up to `lyap_steps`.
  The window used is a pure function of (T, lyap_warmup, lyap_steps), all recorded.
* Coasting and hallucination use `coast_sequences` evaluation sequences (default 1, the
  first, as SCIENCE.md's "an evaluation sequence"); with more, each metric is the mean over
  sequences and the label is read from the mean. A cut beyond the sequence end is moved to
  the end: the zero-input coast needs no data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from stats.lyapunov import summarise_spectrum
from trainers.cells import State, cell_step, check_kind, hidden, init_state, readout
from trainers.config import TrialConfig
from trainers.jacobians import (  # state_jacobians: the contract names it trainers.dynamics.*
    flat_state,
    state_jacobians,
    state_size,
    step_with_jacobian,
)
from worlds.errors import SpecError

NULL_ROLES = ("null", "null_iid")
RETENTION_WINDOW = 20  # steps compared before the cut and at the end of the coast
DECAY_MIN_AMPLITUDE = 0.01
DECAY_MIN_POINTS = 10
INERTIAL_RETENTION = 0.5
HALLUC_VAR = 0.01
HALLUC_MEAN_ABS = 0.05
DEFAULT_COAST_SEQUENCES = 1
# Jacobians built at once, in numbers (float64: 8 bytes each): bounds memory at 128 MiB
JACOBIAN_CHUNK_NUMBERS = 1 << 24

DYNAMICS_COLUMNS = (
    "lyap_spectrum",
    "lyap_1",
    "lyap_gap",
    "lyap_sum",
    "lyap_ky_dim",
    "lyap_label",
    "coast_retention",
    "coast_autocorr",
    "coast_mean_abs",
    "coast_decay",
    "coast_label",
    "halluc_var",
    "halluc_mean_abs",
    "halluc_label",
)


def _float64(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float64) for k, v in params.items()}


def _finite_members(params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """(K,) bool: members whose params and inputs are all finite (diverged ones are not)."""
    ok = torch.isfinite(inputs).flatten(1).all(dim=1)
    for v in params.values():
        ok &= torch.isfinite(v).reshape(v.shape[0], -1).all(dim=1)
    return ok


def lyapunov_window(seq_len: int, warmup: int, steps: int) -> tuple[int, int]:
    """(warm-up steps, measured steps) actually used on sequences of length seq_len.

    As configured when seq_len >= warmup + steps; otherwise the warm-up shrinks to
    min(warmup, seq_len // 4) and the rest of the sequence (at most `steps`) is measured.
    """
    if warmup < 0:
        raise SpecError("lyap_warmup", f"must be >= 0, got {warmup}")
    if steps < 1:
        raise SpecError("lyap_steps", f"must be >= 1, got {steps}")
    if seq_len < 2:
        raise SpecError("inputs", f"sequences need at least 2 steps for a spectrum, got T = {seq_len}")
    if seq_len >= warmup + steps:
        return warmup, steps
    w = min(warmup, seq_len // 4)
    return w, min(steps, seq_len - w)


def _jacobian_chunks(
    kind: str, p: dict[str, torch.Tensor], x: torch.Tensor, states: torch.Tensor
) -> Iterator[torch.Tensor]:
    """Jacobians along a computed trajectory, a chunk of steps at a time.

    x (K, B, T', I) the inputs of the measured steps, states (K, B, T', S) the states before
    them. The Jacobians depend on the trajectory only, not on the Benettin Q, so a whole
    chunk is built in one vectorised call (time folded into the batch) and the per-step
    Python work left is one matmul and one batched QR. Yields (K*B, C, S, S).
    """
    n_k, n_b, n_t, n_s = states.shape
    n_h = p["head_w"].shape[1]
    chunk = max(1, JACOBIAN_CHUNK_NUMBERS // (n_k * n_b * n_s * n_s))
    for c0 in range(0, n_t, chunk):
        c1 = min(n_t, c0 + chunk)
        s_c = states[:, :, c0:c1].reshape(n_k, -1, n_s)  # (K, B*C, S)
        st: State = (s_c[..., :n_h], s_c[..., n_h:]) if kind == "lstm" else s_c
        _, jac = step_with_jacobian(kind, p, x[:, :, c0:c1].reshape(n_k, -1, x.shape[3]), st)
        yield jac.reshape(n_k * n_b, c1 - c0, n_s, n_s)


def _benettin_torch(chunks: Iterator[torch.Tensor], n: int, n_s: int, device: torch.device) -> torch.Tensor:
    """Σ_t log|R_ii| (n, S) for n independent Jacobian sequences; torch QR on `device`."""
    q = torch.eye(n_s, dtype=torch.float64, device=device).expand(n, n_s, n_s)
    log_r = torch.zeros(n, n_s, dtype=torch.float64, device=device)
    for jac in chunks:
        for t in range(jac.shape[1]):
            q, r = torch.linalg.qr(torch.bmm(jac[:, t], q))
            log_r += torch.log(torch.diagonal(r, dim1=-2, dim2=-1).abs())
    return log_r


def _benettin_numpy(chunks: Iterator[torch.Tensor], n: int, n_s: int) -> np.ndarray:
    """As _benettin_torch with numpy's serial LAPACK loop (CPU)."""
    q = np.broadcast_to(np.eye(n_s), (n, n_s, n_s))
    log_r = np.zeros((n, n_s))
    with np.errstate(divide="ignore"):  # a collapsed direction is log 0 = -inf, correctly
        for jac in chunks:
            jac_np = jac.cpu().numpy()
            for t in range(jac_np.shape[1]):
                q, r = np.linalg.qr(jac_np[:, t] @ q)
                log_r += np.log(np.abs(np.diagonal(r, axis1=-2, axis2=-1)))
    return log_r


@torch.no_grad()
def lyapunov_exponents(
    kind: str,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    *,
    warmup: int = 50,
    steps: int = 150,
    qr: str = "auto",
) -> torch.Tensor:
    """Per-sequence Lyapunov spectra of the input-driven cells, the fast way.

    inputs (K, B, T, I); h0 = 0; `lyapunov_window` decides the steps used. Returns
    (K, B, S) float64 on the params' device, each spectrum sorted descending (nats/step).
    Analytic Jacobians and one batched float64 QR over all K·B sequences per step; the
    Jacobians are built a chunk of steps at a time (at most JACOBIAN_CHUNK_NUMBERS numbers).
    Members with non-finite params or inputs get NaN.

    qr: where the per-step QR runs. "auto" is numpy on the CPU and torch elsewhere: torch's
    batched QR splits the batch over OpenMP threads, and on a shared, oversubscribed CPU
    (a Ray node running one trial per core) its barriers made it 10-20x slower than
    numpy's serial LAPACK loop in benchmarks/lyapunov.py; on a GPU torch is the fast one.
    "torch" / "numpy" force one (both give the same numbers).
    """
    check_kind(kind)
    if inputs.ndim != 4:
        raise SpecError("inputs", f"must have shape (K, B, T, I), got {tuple(inputs.shape)}")
    if qr not in ("auto", "torch", "numpy"):
        raise SpecError("qr", f"must be 'auto', 'torch' or 'numpy', got {qr!r}")
    warm, meas = lyapunov_window(inputs.shape[2], warmup, steps)
    p = _float64(params)
    x = inputs.detach().to(device=p["w_hh"].device, dtype=torch.float64)  # (K, B, T, I)
    ok = _finite_members(p, x)  # (K,)
    # zero the diverged members so LAPACK never sees NaN; their rows become NaN at the end
    p = {k: torch.where(ok.view(-1, *[1] * (v.ndim - 1)), v, torch.zeros_like(v)) for k, v in p.items()}
    x = torch.where(ok.view(-1, 1, 1, 1), x, torch.zeros_like(x))
    n_k, n_b = x.shape[:2]
    n_s = state_size(kind, p["head_w"].shape[1])

    state: State = init_state(kind, p, n_b)
    states = []  # flat states BEFORE each measured step, (K, B, S) each
    for t in range(warm + meas):
        if t >= warm:
            states.append(flat_state(state))
        state = cell_step(kind, p, x[:, :, t], state)
    chunks = _jacobian_chunks(kind, p, x[:, :, warm : warm + meas], torch.stack(states, dim=2))
    if qr == "numpy" or (qr == "auto" and x.device.type == "cpu"):
        log_r = torch.from_numpy(_benettin_numpy(chunks, n_k * n_b, n_s)).to(x.device)
    else:
        log_r = _benettin_torch(chunks, n_k * n_b, n_s, x.device)  # (K*B, S)
    spectra = (log_r / meas).reshape(n_k, n_b, n_s)
    spectra = torch.sort(spectra, dim=-1, descending=True).values
    return torch.where(ok.view(-1, 1, 1), spectra, torch.full_like(spectra, math.nan))


@torch.no_grad()
def coast_predictions(
    kind: str, params: dict[str, torch.Tensor], inputs: torch.Tensor, cut: int, length: int
) -> tuple[np.ndarray, int]:
    """Head predictions (K, B, cut' + length) when the whole input is set to 0 from step cut'.

    cut' = min(cut, T): a cut beyond the data is moved to the sequence end. The first cut'
    predictions are driven by inputs[:, :, :cut'], the last `length` by zero input.
    """
    check_kind(kind)
    if inputs.ndim != 4:
        raise SpecError("inputs", f"must have shape (K, B, T, I), got {tuple(inputs.shape)}")
    if cut < 0:
        raise SpecError("coast_cut", f"must be >= 0, got {cut}")
    if length < 1:
        raise SpecError("coast_len", f"must be >= 1, got {length}")
    p = _float64(params)
    x = inputs.detach().to(device=p["w_hh"].device, dtype=torch.float64)
    cut = min(cut, x.shape[2])
    zeros = x.new_zeros(*x.shape[:2], length, x.shape[3])
    drive = torch.cat([x[:, :, :cut], zeros], dim=2)  # (K, B, cut + length, I)
    state = init_state(kind, p, x.shape[1])
    hs = []
    for t in range(drive.shape[2]):
        state = cell_step(kind, p, drive[:, :, t], state)
        hs.append(hidden(state))
    pred = readout(p, torch.stack(hs, dim=2))  # (K, B, cut + length)
    return pred.cpu().numpy(), cut


def coast_metrics(pred: np.ndarray, cut: int) -> dict[str, np.ndarray]:
    """SCIENCE.md's coasting numbers from predictions (..., L) whose input was cut at `cut`.

    retention = std(last 20 coast preds) / std(20 preds before the cut) (population std;
    fewer points when fewer exist; NaN when the pre-cut output is constant or has < 2 points);
    autocorr = lag-1 autocorrelation over the coast window (NaN for a constant coast);
    mean_abs = mean |pred| and var = variance over the coast window;
    decay = least-squares slope (per step) of log(|pred| / |pred at the cut|) over the coast
    steps whose normalised amplitude is > 0.01, NaN with fewer than 10 such steps. "At the
    cut" is the first coast step (the first prediction made without input): the slope does
    not depend on the reference, only the 0.01 threshold does, and measuring from where the
    free-running system starts makes it a decay of the coast itself.
    """
    pred = np.asarray(pred, dtype=np.float64)
    coast = pred[..., cut:]  # (..., length)
    n = coast.shape[-1]
    if n < 1:
        raise SpecError("coast_len", "the coast window is empty")
    before = pred[..., max(0, cut - RETENTION_WINDOW) : cut]
    tail = coast[..., max(0, n - RETENTION_WINDOW) :]
    with np.errstate(divide="ignore", invalid="ignore"):
        if before.shape[-1] >= 2:
            pre_std = before.std(axis=-1)
            # a constant pre-cut output has a std of rounding noise, not 0: treat it as 0
            floor = 64 * np.finfo(np.float64).eps * np.abs(before).max(axis=-1)
            pre_std = np.where(pre_std > floor, pre_std, 0.0)
        else:
            pre_std = np.full(pred.shape[:-1], np.nan)
        retention = np.where(pre_std > 0, tail.std(axis=-1) / np.where(pre_std > 0, pre_std, 1.0), np.nan)
        if n >= 3:
            a, b = coast[..., :-1], coast[..., 1:]
            a = a - a.mean(axis=-1, keepdims=True)
            b = b - b.mean(axis=-1, keepdims=True)
            den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
            autocorr = np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1.0), np.nan)
        else:
            autocorr = np.full(pred.shape[:-1], np.nan)
        amp = np.abs(coast) / np.abs(coast[..., :1])  # (..., length); inf/NaN when pred at cut is 0
    decay = np.full(pred.shape[:-1], np.nan)
    t = np.arange(n, dtype=np.float64)
    for idx in np.ndindex(*pred.shape[:-1]):
        use = np.isfinite(amp[idx]) & (amp[idx] > DECAY_MIN_AMPLITUDE)
        if use.sum() >= DECAY_MIN_POINTS:
            tt, yy = t[use], np.log(amp[idx][use])
            tt = tt - tt.mean()
            decay[idx] = float((tt * (yy - yy.mean())).sum() / (tt * tt).sum())
    return {
        "retention": retention,
        "autocorr": autocorr,
        "mean_abs": np.abs(coast).mean(axis=-1),
        "var": coast.var(axis=-1),
        "decay": decay,
    }


def coast_label(retention: float) -> str:
    if math.isnan(retention):
        return ""
    return "inertial" if retention > INERTIAL_RETENTION else "dissipative"


def hallucination_label(var: float, mean_abs: float) -> str:
    if math.isnan(var) or math.isnan(mean_abs):
        return ""
    return "hallucination" if var > HALLUC_VAR or mean_abs > HALLUC_MEAN_ABS else "nihilism"


def _nan_mean(x: np.ndarray) -> np.ndarray:
    """Mean over sequences (last axis) that stays NaN-quiet: NaN when every value is NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice"
        return np.nanmean(x, axis=-1)


def dynamics_columns(
    kind: str,
    params: dict[str, torch.Tensor],
    inputs_full_time: torch.Tensor,
    inputs_cond: torch.Tensor,
    roles: list[str],
    config: TrialConfig,
    *,
    coast_sequences: int | None = None,
) -> list[dict[str, Any]]:
    """The dynamics result columns (trainers.config.RESULT_COLUMNS) for each of K members.

    inputs_full_time (K, N, T, I): evaluation inputs with the full_time channel (Lyapunov);
    inputs_cond (K, N, T, I): evaluation inputs conditioned as in evaluation (coasting,
    hallucination); roles: the world role of each member's data. Switched off
    (config.lyapunov / config.coasting False) or not applicable (hallucination on a
    non-null world) gives NaN, "" and [] for the list column.
    """
    check_kind(kind)
    n_k = params["head_w"].shape[0]
    for name, x in (("inputs_full_time", inputs_full_time), ("inputs_cond", inputs_cond)):
        if x.ndim != 4 or x.shape[0] != n_k:
            raise SpecError(name, f"must have shape (K={n_k}, N, T, I), got {tuple(x.shape)}")
    if len(roles) != n_k:
        raise SpecError("roles", f"needs one role per member ({n_k}), got {len(roles)}")
    if coast_sequences is None:  # the config's setting, unless the caller overrides it
        coast_sequences = getattr(config, "coast_sequences", DEFAULT_COAST_SEQUENCES)
    if coast_sequences < 1:
        raise SpecError("coast_sequences", f"must be >= 1, got {coast_sequences}")
    nan = float("nan")
    rows: list[dict[str, Any]] = [
        {c: ([] if c == "lyap_spectrum" else "" if c.endswith("_label") else nan) for c in DYNAMICS_COLUMNS}
        for _ in range(n_k)
    ]

    if config.lyapunov:
        x = inputs_full_time[:, : config.lyap_sequences]
        spectra = lyapunov_exponents(kind, params, x, warmup=config.lyap_warmup, steps=config.lyap_steps)
        per_member = spectra.mean(dim=1).cpu().numpy()  # (K, S)
        for row, spec in zip(rows, per_member, strict=True):
            s = summarise_spectrum(spec)
            row.update(
                lyap_spectrum=list(s.spectrum),
                lyap_1=s.lambda1,
                lyap_gap=s.gap,
                lyap_sum=s.sum,
                lyap_ky_dim=s.ky_dim,
                lyap_label=s.label,
            )

    if config.coasting:
        x = inputs_cond[:, :coast_sequences]
        pred, cut = coast_predictions(kind, params, x, config.coast_cut, config.coast_len)
        m = {k: _nan_mean(v) for k, v in coast_metrics(pred, cut).items()}  # each (K,)
        for k, row in enumerate(rows):
            row.update(
                coast_retention=float(m["retention"][k]),
                coast_autocorr=float(m["autocorr"][k]),
                coast_mean_abs=float(m["mean_abs"][k]),
                coast_decay=float(m["decay"][k]),
                coast_label=coast_label(float(m["retention"][k])),
            )
        null = [k for k, r in enumerate(roles) if r in NULL_ROLES]
        if null:
            sel = torch.tensor(null, device=inputs_cond.device)
            sub = {name: v[sel.to(v.device)] for name, v in params.items()}
            pred, cut = coast_predictions(kind, sub, x[sel], config.halluc_cut, config.halluc_len)
            hm = {k: _nan_mean(v) for k, v in coast_metrics(pred, cut).items()}
            for j, k in enumerate(null):
                var, mean_abs = float(hm["var"][j]), float(hm["mean_abs"][j])
                rows[k].update(
                    halluc_var=var,
                    halluc_mean_abs=mean_abs,
                    halluc_label=hallucination_label(var, mean_abs),
                )
    return rows


__all__ = [
    "DYNAMICS_COLUMNS",
    "coast_label",
    "coast_metrics",
    "coast_predictions",
    "dynamics_columns",
    "flat_state",
    "hallucination_label",
    "lyapunov_exponents",
    "lyapunov_window",
    "state_jacobians",
]
