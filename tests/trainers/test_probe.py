"""The ridge probe against numpy least squares and on latents with known answers."""

from __future__ import annotations

import math

import numpy as np
import torch

from trainers.probe import ProbeMoments, cyclic_derangement, probe_r2, split_mask


def test_split_is_by_sequence_80_20_and_seeded() -> None:
    m = split_mask(50, torch.Generator().manual_seed(1))
    assert int(m.sum()) == 40
    assert torch.equal(m, split_mask(50, torch.Generator().manual_seed(1)))
    assert not torch.equal(m, split_mask(50, torch.Generator().manual_seed(2)))
    assert int(split_mask(2, torch.Generator().manual_seed(1)).sum()) == 1


def test_cyclic_derangement_has_no_fixed_point() -> None:
    for seed in range(20):
        p = cyclic_derangement(7, torch.Generator().manual_seed(seed))
        assert sorted(p.tolist()) == list(range(7))
        assert not (p == torch.arange(7)).any()


def test_linear_latent_is_recovered_and_noise_is_not() -> None:
    g = torch.Generator().manual_seed(0)
    k, n, t, h = 2, 60, 12, 5
    states = torch.randn(k, n, t, h, generator=g)
    w = torch.randn(k, h, generator=g)
    linear = torch.einsum("knth,kh->knt", states, w) + 0.7
    fit = torch.stack([split_mask(n, torch.Generator().manual_seed(s)) for s in range(k)])
    r2 = probe_r2(states, linear, fit, ridge=1e-6)
    assert torch.all(r2 > 0.9999)
    noise = torch.randn(k, n, t, generator=g)
    r2_noise = probe_r2(states, noise, fit, ridge=1e-6)
    assert torch.all(r2_noise.abs() < 0.05)


def test_matches_numpy_least_squares_on_held_out_rows() -> None:
    rng = np.random.default_rng(4)
    n, t, h = 30, 8, 3
    states = rng.normal(size=(n, t, h))
    latent = states @ rng.normal(size=h) + rng.normal(scale=0.5, size=(n, t))
    fit = split_mask(n, torch.Generator().manual_seed(9)).numpy()
    x = np.concatenate([states[:, 1:], np.ones((n, t - 1, 1))], axis=-1)  # rows t >= 1
    y = latent[:, 1:]
    w, *_ = np.linalg.lstsq(x[fit].reshape(-1, h + 1), y[fit].reshape(-1), rcond=None)
    pred = x[~fit].reshape(-1, h + 1) @ w
    yt = y[~fit].reshape(-1)
    expected = 1 - ((yt - pred) ** 2).sum() / ((yt - yt.mean()) ** 2).sum()
    got = probe_r2(
        torch.from_numpy(states)[None], torch.from_numpy(latent)[None], torch.from_numpy(fit)[None], ridge=1e-12
    )
    assert abs(float(got[0]) - expected) < 1e-9


def test_constant_latent_gives_nan() -> None:
    m = ProbeMoments(1, 2)
    m.add(torch.randn(1, 40, 2), torch.full((1, 40, 1), 3.0), torch.arange(40)[None] < 30)
    assert math.isnan(float(m.r2(1e-3)[0, 0]))
