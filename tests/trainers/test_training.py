"""The training loop's parts: loss, batched Adam against torch.optim.Adam, modes, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.cells import CORE_KEYS, HEAD_KEYS, init_params
from trainers.training import (
    Batches,
    adam_init,
    adam_step,
    gaussian_nll,
    loss_and_grads,
    member_loss,
    predict,
    scramble_core,
    stream_seed,
    train,
    trainable_keys,
)
from worlds import make


def test_loss_is_200_mse_minus_constant() -> None:
    g = torch.Generator().manual_seed(1)
    params = init_params("gru", 4, 2, [3, 4])
    x = torch.randn(2, 5, 9, 2, generator=g)
    y = torch.randn(2, 5, 8, generator=g)
    pred = predict("gru", params, x)[:, :, :-1]  # step t predicts y[t+1]
    mse = ((pred - y) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(member_loss("gru", params, x, y), 200.0 * mse - 2.0767937, rtol=1e-5, atol=1e-4)
    assert math.isclose(float(gaussian_nll(torch.tensor(0.0), torch.tensor(0.0))), -2.0767937, rel_tol=1e-6)


def test_batched_adam_equals_torch_adam_per_member() -> None:
    lrs = [1e-3, 3e-2, 1e-1]
    params = init_params("lstm", 3, 2, [7, 8, 9])
    trainable = CORE_KEYS + HEAD_KEYS
    state = adam_init(params, trainable, torch.tensor(lrs))
    refs = []
    for k, lr in enumerate(lrs):
        copy = {n: params[n][k].clone().requires_grad_() for n in trainable}
        refs.append((copy, torch.optim.Adam(copy.values(), lr=lr)))
    active = torch.ones(3, dtype=torch.bool)
    for step in range(25):
        grads = {n: torch.sin(3.0 * params[n] + step) * (1 + n.startswith("w")) for n in trainable}
        params = adam_step(params, grads, state, active)
        for copy, opt in refs:
            for n in trainable:
                copy[n].grad = torch.sin(3.0 * copy[n].detach() + step) * (1 + n.startswith("w"))
            opt.step()
    for k, (copy, _) in enumerate(refs):
        for n in trainable:
            torch.testing.assert_close(params[n][k], copy[n].detach(), rtol=1e-6, atol=1e-7)


def test_inactive_member_is_frozen_and_keeps_its_step_count() -> None:
    params = init_params("gru", 3, 2, [1, 2])
    state = adam_init(params, HEAD_KEYS, torch.tensor([0.1, 0.1]))
    grads = {n: torch.ones_like(params[n]) for n in HEAD_KEYS}
    new = adam_step(params, grads, state, torch.tensor([True, False]))
    assert not torch.equal(new["head_w"][0], params["head_w"][0])
    assert torch.equal(new["head_w"][1], params["head_w"][1])
    assert state.steps.tolist() == [1.0, 0.0]
    assert torch.equal(state.exp_avg["head_w"][1], torch.zeros(3))


def small_batches(seeds: list[int], time_cond: str = "full_time") -> Batches:
    d = make("E3_osc_struct", seed=0, n_train=64, n_eval=8, T=16)
    return Batches([d.train.inputs] * len(seeds), [d.train.obs] * len(seeds), seeds, [time_cond] * len(seeds), 8)


def test_readout_only_leaves_the_core_at_init() -> None:
    seeds = [1, 2]
    init = init_params("gru", 4, 2, seeds)
    out = train("gru", dict(init), small_batches(seeds), torch.tensor([1e-2, 1e-2]), 20, trainable_keys("readout_only"))
    for n in CORE_KEYS:
        assert torch.equal(out.params[n], init[n])
    assert not torch.equal(out.params["head_w"], init["head_w"])
    assert out.diverged_at.tolist() == [-1, -1]


def test_scramble_core_permutes_entries_of_weight_matrices_only() -> None:
    seeds = [5, 6]
    p = init_params("lstm", 4, 2, seeds)
    s = scramble_core(p, seeds)
    for n in ("w_ih", "w_hh"):
        assert not torch.equal(s[n], p[n])
        for k in range(2):  # same multiset of entries, per member
            assert torch.equal(s[n][k].flatten().sort().values, p[n][k].flatten().sort().values)
    for n in ("b_ih", "b_hh", "head_w", "head_b"):
        assert torch.equal(s[n], p[n])
    # seeded per member: member 6 scrambles the same alone as beside member 5
    alone = scramble_core({n: v[1:] for n, v in p.items()}, [6])
    assert all(torch.equal(alone[n][0], s[n][1]) for n in p)


def test_diverging_member_stops_and_others_are_unaffected() -> None:
    seeds = [1, 2]
    batches = small_batches(seeds)

    class PoisonFirst:  # the real batches, with member 0's inputs turned to NaN from step 3
        def __init__(self) -> None:
            self.step = 0

        def next(self):
            x, y = batches.next()
            if self.step >= 3:
                x = x.clone()
                x[0] = math.nan
            self.step += 1
            return x, y

    init = init_params("gru", 4, 2, seeds)
    out = train("gru", dict(init), PoisonFirst(), torch.tensor([1e-2, 1e-2]), 10, trainable_keys("full"))
    assert out.diverged_at.tolist() == [3, -1]
    assert all(torch.isfinite(v).all() for v in out.params.values())  # the last finite weights
    assert math.isnan(float(out.final_loss[0])) and math.isfinite(float(out.final_loss[1]))
    solo = train("gru", {n: v[1:] for n, v in init.items()}, small_batches([2]), torch.tensor([1e-2]), 10, trainable_keys("full"))
    for n in init:
        torch.testing.assert_close(out.params[n][1], solo.params[n][0], rtol=1e-5, atol=1e-6)


def test_batches_depend_only_on_the_member_seed() -> None:
    a = small_batches([4, 9], "random_time")
    b = small_batches([9], "random_time")
    for _ in range(3):
        (xa, ya), (xb, yb) = a.next(), b.next()
        assert torch.equal(xa[1], xb[0]) and torch.equal(ya[1], yb[0])
        assert not torch.equal(xa[0], xa[1])
    assert stream_seed(1, "batches") != stream_seed(1, "train_time") != stream_seed(2, "batches")


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_autograd_gradients_are_per_member(kind: str) -> None:
    """Member k's gradient from the batched call equals the gradient of its loss alone."""
    g = torch.Generator().manual_seed(2)
    params = init_params(kind, 3, 2, [1, 2, 3])
    x, y = torch.randn(3, 4, 6, 2, generator=g), torch.randn(3, 4, 5, generator=g)
    loss, grads = loss_and_grads(kind, params, x, y, trainable_keys("full"))
    one = {n: v[1:2] for n, v in params.items()}
    loss1, grads1 = loss_and_grads(kind, one, x[1:2], y[1:2], trainable_keys("full"))
    torch.testing.assert_close(loss[1:2], loss1)
    for n in grads:
        torch.testing.assert_close(grads[n][1:2], grads1[n], rtol=1e-5, atol=1e-6)
