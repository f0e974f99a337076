"""Linear probe of the world's latent from hidden states, batched over members.

Alignment (decision): the hidden state after reading input t, h[t] = run_cell(x)[..., t, :],
is paired with latent[t] for t = 1 .. T-1 ("h[1:]"); t = 0, where the state has seen a
single observation (for E1 always 0), is left out. For the LSTM the probe reads h, not the
cell state c (the readout sees only h; the Lyapunov Jacobians use the full state (h, c)).
The shuffled control pairs the state of (sequence n, step t) with the latent of (pi(n),
sigma(t)): pi a random cyclic permutation of the sequences (no sequence keeps its own
latent), sigma a random permutation of the steps 1..T-1, both from the member's seed. It is
a bijection of the rows, like a uniform row shuffle, but needs no per-row index storage, so
the evaluation can stream.

Fit (SCIENCE.md §3): closed-form ridge with an unpenalised intercept,
    w = (X'X/n + lambda*I')^-1 X'y/n        (lambda = TrialConfig.probe_ridge, I' skips the intercept)
on the rows of 80% of the sequences (a seeded split by SEQUENCE), R^2 = 1 - SSE/SST on the
rows of the held-out 20%. Scaling by n makes lambda independent of how many rows there are.

Everything is computed from accumulated moments (X'X, X'y, y'y, sums) per member, so the
evaluation can stream over chunks of sequences and never holds all hidden states.
"""

from __future__ import annotations

import math

import torch

TRAIN_FRACTION = 0.8


def split_mask(n_seq: int, generator: torch.Generator) -> torch.Tensor:
    """(n_seq,) bool, True for the probe-training sequences (round(0.8 n), at least one
    held out when n >= 2)."""
    n_fit = min(max(1, round(TRAIN_FRACTION * n_seq)), max(1, n_seq - 1))
    mask = torch.zeros(n_seq, dtype=torch.bool)
    mask[torch.randperm(n_seq, generator=generator)[:n_fit]] = True
    return mask


def cyclic_derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of range(n) with no fixed point (for n >= 2): p[i] -> p[i+1]."""
    p = torch.randperm(n, generator=generator)
    out = torch.empty(n, dtype=torch.long)
    out[p] = p.roll(-1)
    return out


class ProbeMoments:
    """Running moments of K independent ridge problems sharing one design matrix per member
    and M target columns.

    With Z = [states, 1, targets] (K, R, H+1+M), the Gram matrices Z'Z over all rows and
    over the fit rows hold every moment needed (X'X, X'y, y'y, sums, counts); the held-out
    moments are their difference. Accumulated in float64.
    """

    def __init__(self, k: int, h: int, m: int = 1, device: torch.device | str = "cpu") -> None:
        self.d = h + 1
        size = (k, h + 1 + m, h + 1 + m)
        self.gram_all = torch.zeros(size, dtype=torch.float64, device=device)
        self.gram_fit = torch.zeros(size, dtype=torch.float64, device=device)

    def add(self, states: torch.Tensor, targets: torch.Tensor, fit_rows: torch.Tensor) -> None:
        """states (K, R, H), targets (K, R, M), fit_rows (K, R) bool (False = held out)."""
        z = torch.cat([states, torch.ones_like(states[..., :1]), targets.to(states.dtype)], dim=-1)
        zt = z.transpose(1, 2)  # (K, D, R)
        self.gram_all += torch.bmm(zt, z).double()
        self.gram_fit += torch.bmm(zt * fit_rows.to(z.dtype).unsqueeze(1), z).double()

    def r2(self, ridge: torch.Tensor | float) -> torch.Tensor:
        """Held-out R^2 per member and target (K, M) float64; NaN where the held-out target
        has no variance or there are no fit / held-out rows."""
        d = self.d
        fit, test = self.gram_fit, self.gram_all - self.gram_fit
        k = fit.shape[0]
        n_fit, n_test = fit[:, d - 1, d - 1], test[:, d - 1, d - 1]  # the intercept counts rows
        n = n_fit.clamp(min=1.0)[:, None, None]
        lam = torch.as_tensor(ridge, dtype=torch.float64, device=n.device).expand(k)
        penalty = torch.eye(d, dtype=torch.float64, device=n.device).expand(k, d, d).clone()
        penalty[:, -1, -1] = 0.0  # the intercept is not shrunk
        a = fit[:, :d, :d] / n + lam[:, None, None] * penalty
        w, info = torch.linalg.solve_ex(a, fit[:, :d, d:] / n)  # (K, H+1, M); info != 0: singular
        yty = torch.diagonal(test[:, d:, d:], dim1=1, dim2=2)  # (K, M)
        y_sum = test[:, d - 1, d:]  # (K, M)
        sse = yty - 2.0 * (w * test[:, :d, d:]).sum(dim=1) + torch.einsum("kim,kij,kjm->km", w, test[:, :d, :d], w)
        sst = yty - y_sum**2 / n_test.clamp(min=1.0)[:, None]
        bad = ((n_test < 1) | (n_fit < 1) | (info != 0))[:, None]
        degenerate = (sst <= 1e-12 * yty.abs().clamp(min=1e-300)) | bad
        r2 = 1.0 - sse.clamp(min=0.0) / sst
        return torch.where(degenerate, torch.full_like(r2, math.nan), r2)


def probe_r2(
    states: torch.Tensor, latent: torch.Tensor, fit_seqs: torch.Tensor, ridge: float
) -> torch.Tensor:
    """Held-out R^2 of whole tensors: states (K, N, T, H), latent (K, N, T) aligned with
    the states, fit_seqs (K, N) bool. Rows t = 1..T-1 enter, per the module docstring."""
    k, n, t, h = states.shape
    m = ProbeMoments(k, h, 1, states.device)
    fit_rows = fit_seqs[:, :, None].expand(k, n, t - 1).reshape(k, -1)
    m.add(states[:, :, 1:].reshape(k, -1, h), latent[:, :, 1:].reshape(k, -1, 1), fit_rows)
    return m.r2(ridge)[:, 0]
