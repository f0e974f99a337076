"""The native fast path gives autograd's loss and gradients, member by member."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from trainers import cells, fastpath

CPU = torch.device("cpu")
ALL = fastpath.PARAM_KEYS
HEAD = cells.HEAD_KEYS
HAS_COMPILER = shutil.which(os.environ.get("CXX", "c++")) is not None
needs_native = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler: fast path unavailable")


def problem(kind: str, k: int, b: int, t: int, h: int, dtype: torch.dtype, seed: int = 0):
    """Random weights (init + noise, so no symmetry hides a wrong index) and data."""
    gen = torch.Generator().manual_seed(seed)
    params = cells.init_params(kind, h, 2, [seed * 100 + i for i in range(k)], dtype=dtype)
    params = {
        n: v + 0.2 * torch.randn(v.shape, generator=gen, dtype=dtype) for n, v in params.items()
    }
    x = torch.randn(k, b, t, 2, generator=gen, dtype=dtype)  # (K, B, T, I)
    y = 0.5 * torch.randn(k, b, t - 1, generator=gen, dtype=dtype)  # (K, B, T-1)
    return params, x, y


def assert_close_to_autograd(kind, params, x, y, trainable, rtol, atol_scale):
    loss, grads = fastpath.loss_and_grads(kind, params, x, y, trainable)
    ref_loss, ref_grads = fastpath.autograd_loss_and_grads(kind, params, x, y, trainable)
    assert loss.shape == ref_loss.shape == (x.shape[0],)
    assert loss.dtype == x.dtype
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=atol_scale)
    assert set(grads) == set(trainable)
    for n in trainable:
        assert grads[n].shape == params[n].shape and grads[n].dtype == params[n].dtype, n
        scale = ref_grads[n].abs().max().item()
        torch.testing.assert_close(
            grads[n], ref_grads[n], rtol=rtol, atol=atol_scale * scale, msg=n
        )


@needs_native
def test_available_on_cpu_for_every_kind():
    for kind in cells.GATES:
        assert fastpath.available(kind, CPU, ALL)
        assert fastpath.available(kind, "cpu", HEAD)


@needs_native
@pytest.mark.parametrize("kind", sorted(cells.GATES))
@pytest.mark.parametrize(
    ("k", "b", "t", "h"),
    [(1, 1, 2, 1), (3, 5, 9, 4), (2, 37, 13, 16), (2, 64, 6, 32), (1, 70, 5, 3)],
)
def test_float64_equals_autograd(kind, k, b, t, h):
    # odd batch sizes exercise the SIMD padding and the batch chunks (64+ sequences)
    params, x, y = problem(kind, k, b, t, h, torch.float64)
    assert_close_to_autograd(kind, params, x, y, ALL, rtol=1e-9, atol_scale=1e-11)


@needs_native
@pytest.mark.parametrize("kind", sorted(cells.GATES))
def test_float32_equals_autograd_on_a_long_sequence(kind):
    params, x, y = problem(kind, 3, 64, 60, 16, torch.float32, seed=1)
    assert_close_to_autograd(kind, params, x, y, ALL, rtol=2e-4, atol_scale=2e-5)


@needs_native
@pytest.mark.parametrize("kind", sorted(cells.GATES))
def test_head_only_and_partial_trainable_sets(kind):
    params, x, y = problem(kind, 2, 11, 8, 5, torch.float64, seed=2)
    assert_close_to_autograd(kind, params, x, y, HEAD, rtol=1e-9, atol_scale=1e-11)
    assert_close_to_autograd(kind, params, x, y, ("w_hh", "head_b"), rtol=1e-9, atol_scale=1e-11)
    loss, grads = fastpath.loss_and_grads(kind, params, x, y, ())
    assert grads == {} and torch.isfinite(loss).all()


@needs_native
@pytest.mark.parametrize("kind", sorted(cells.GATES))
def test_member_result_does_not_depend_on_batch_mates(kind):
    params, x, y = problem(kind, 5, 40, 12, 8, torch.float32, seed=3)
    loss, grads = fastpath.loss_and_grads(kind, params, x, y, ALL)
    for k in (0, 3):
        alone = {n: v[k : k + 1] for n, v in params.items()}
        loss_k, grads_k = fastpath.loss_and_grads(kind, alone, x[k : k + 1], y[k : k + 1], ALL)
        assert torch.equal(loss_k[0], loss[k])  # bitwise: each member runs alone in a thread
        for n in ALL:
            assert torch.equal(grads_k[n][0], grads[n][k]), n


@needs_native
def test_bitwise_reproducible_across_thread_counts():
    params, x, y = problem("gru", 4, 20, 10, 6, torch.float32, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fastpath.loss_and_grads("gru", params, x, y, ALL)
        torch.set_num_threads(2)
        two = fastpath.loss_and_grads("gru", params, x, y, ALL)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0])
    assert all(torch.equal(one[1][n], two[1][n]) for n in ALL)


def test_not_available_where_it_does_not_apply(monkeypatch):
    assert not fastpath.available("gru", torch.device("cuda"), ALL)
    assert not fastpath.available("gru", torch.device("meta"), ALL)
    assert not fastpath.available("transformer", CPU, ALL)
    assert not fastpath.available("gru", CPU, ("w_ih", "bias"))
    monkeypatch.setenv("WORLDSWEEP_FASTPATH", "0")
    assert not fastpath.available("gru", CPU, ALL)


def test_missing_compiler_means_unavailable_and_autograd_still_serves(monkeypatch, tmp_path):
    monkeypatch.setattr(fastpath, "_lib", None)
    monkeypatch.setattr(fastpath, "_lib_error", None)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("WORLDSWEEP_CACHE_DIR", str(tmp_path))
    assert not fastpath.available("gru", CPU, ALL)
    assert "no-such-compiler" in fastpath._lib_error
    params, x, y = problem("gru", 2, 3, 5, 4, torch.float64)
    loss, grads = fastpath.loss_and_grads("gru", params, x, y, HEAD)  # served by autograd
    ref_loss, ref_grads = fastpath.autograd_loss_and_grads("gru", params, x, y, HEAD)
    assert torch.equal(loss, ref_loss) and torch.equal(grads["head_w"], ref_grads["head_w"])


def test_bad_shapes_name_the_argument():
    params, x, y = problem("gru", 2, 3, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="`y`"):
        fastpath.loss_and_grads("gru", params, x, y[:, :, :-1], ALL)
    with pytest.raises(ValueError, match="w_hh"):
        fastpath.loss_and_grads("gru", {**params, "w_hh": params["w_hh"][:, :4]}, x, y, ALL)
    with pytest.raises(ValueError, match="`trainable`"):
        fastpath.loss_and_grads("gru", params, x, y, ("weights",))
    with pytest.raises(ValueError, match="T >= 2"):
        fastpath.loss_and_grads("gru", params, x[:, :, :1], y[:, :, :0], ALL)


@needs_native
def test_a_diverged_member_gives_nan_and_leaves_the_others_alone():
    params, x, y = problem("gru", 3, 16, 6, 4, torch.float32, seed=5)
    clean_loss, clean_grads = fastpath.loss_and_grads("gru", params, x, y, ALL)
    params["w_hh"][1, 0, 0] = float("nan")
    loss, grads = fastpath.loss_and_grads("gru", params, x, y, ALL)
    assert torch.isnan(loss[1]) and torch.isnan(grads["w_hh"][1]).any()
    for k in (0, 2):
        assert torch.equal(loss[k], clean_loss[k])
        assert all(torch.equal(grads[n][k], clean_grads[n][k]) for n in ALL)


def test_mixed_dtypes_fall_back_to_autograd():
    params, x, y = problem("lstm", 2, 4, 5, 3, torch.float64)
    loss, grads = fastpath.loss_and_grads("lstm", params, x, y.float(), ALL)
    ref_loss, ref_grads = fastpath.autograd_loss_and_grads("lstm", params, x, y.float(), ALL)
    torch.testing.assert_close(loss, ref_loss)
    assert all(torch.equal(grads[n], ref_grads[n]) for n in ALL)
