"""Linear probe of the world's latent from hidden states, batched over members.

Alignment (decision): the hidden state after reading input t, h[t] = run_cell(x)[..., t, :],
is paired with latent[t] for t = 1 .. T-1 ("h[1:]"); t = 0, where the state has seen a
single observation (for E1 always 0), is left out.

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
    """Running moments of K independent ridge problems (float64 accumulators)."""

    def __init__(self, k: int, h: int, device: torch.device | str = "cpu") -> None:
        z = dict(dtype=torch.float64, device=device)
        self.xtx_fit = torch.zeros(k, h + 1, h + 1, **z)
        self.xty_fit = torch.zeros(k, h + 1, **z)
        self.xtx_test = torch.zeros(k, h + 1, h + 1, **z)
        self.xty_test = torch.zeros(k, h + 1, **z)
        self.yty_test = torch.zeros(k, **z)
        self.y_sum_test = torch.zeros(k, **z)
        self.n_fit = torch.zeros(k, **z)
        self.n_test = torch.zeros(k, **z)

    def add(self, states: torch.Tensor, target: torch.Tensor, fit_rows: torch.Tensor) -> None:
        """states (K, R, H), target (K, R), fit_rows (K, R) bool (False = held out)."""
        x = torch.cat([states, torch.ones_like(states[..., :1])], dim=-1)  # (K, R, H+1)
        y = target.to(x.dtype)
        w_fit = fit_rows.to(x.dtype).unsqueeze(-1)  # (K, R, 1)
        w_test = 1.0 - w_fit
        xf, xt = x * w_fit, x * w_test
        self.xtx_fit += torch.bmm(xf.transpose(1, 2), x).double()
        self.xty_fit += torch.bmm(xf.transpose(1, 2), y.unsqueeze(-1)).squeeze(-1).double()
        self.xtx_test += torch.bmm(xt.transpose(1, 2), x).double()
        self.xty_test += torch.bmm(xt.transpose(1, 2), y.unsqueeze(-1)).squeeze(-1).double()
        yt = y.double() * w_test.squeeze(-1).double()
        self.yty_test += (yt * y.double()).sum(dim=1)
        self.y_sum_test += yt.sum(dim=1)
        self.n_fit += w_fit.squeeze(-1).double().sum(dim=1)
        self.n_test += w_test.squeeze(-1).double().sum(dim=1)

    def r2(self, ridge: torch.Tensor | float) -> torch.Tensor:
        """Held-out R^2 per member (K,) float64; NaN where the held-out latent has no variance
        or there are no fit / held-out rows."""
        k, d, _ = self.xtx_fit.shape
        n = self.n_fit.clamp(min=1.0)[:, None, None]
        lam = torch.as_tensor(ridge, dtype=torch.float64, device=self.xtx_fit.device).expand(k)
        penalty = torch.eye(d, dtype=torch.float64, device=lam.device).expand(k, d, d).clone()
        penalty[:, -1, -1] = 0.0  # the intercept is not shrunk
        a = self.xtx_fit / n + lam[:, None, None] * penalty
        b = self.xty_fit / n.squeeze(-1)
        w, info = torch.linalg.solve_ex(a, b)  # (K, H+1); info != 0: singular (ridge 0)
        sse = (
            self.yty_test
            - 2.0 * (w * self.xty_test).sum(dim=1)
            + torch.einsum("ki,kij,kj->k", w, self.xtx_test, w)
        )
        sst = self.yty_test - self.y_sum_test**2 / self.n_test.clamp(min=1.0)
        scale = self.yty_test.abs().clamp(min=1e-300)
        degenerate = (sst <= 1e-12 * scale) | (self.n_test < 1) | (self.n_fit < 1) | (info != 0)
        r2 = 1.0 - sse.clamp(min=0.0) / sst
        return torch.where(degenerate, torch.full_like(r2, math.nan), r2)


def probe_r2(
    states: torch.Tensor, latent: torch.Tensor, fit_seqs: torch.Tensor, ridge: float
) -> torch.Tensor:
    """Held-out R^2 of whole tensors: states (K, N, T, H), latent (K, N, T) aligned with
    the states, fit_seqs (K, N) bool. Rows t = 1..T-1 enter, per the module docstring."""
    k, n, t, h = states.shape
    m = ProbeMoments(k, h, states.device)
    fit_rows = fit_seqs[:, :, None].expand(k, n, t - 1).reshape(k, -1)
    m.add(states[:, :, 1:].reshape(k, -1, h), latent[:, :, 1:].reshape(k, -1), fit_rows)
    return m.r2(ridge)
