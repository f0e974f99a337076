"""The batched cells against torch.nn.RNN / GRU / LSTM: forward outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from trainers.cells import GATES, init_params, init_params_one, run_cell

KINDS = ("rnn_tanh", "gru", "lstm")
F64 = torch.float64


def torch_module(kind: str, p: dict[str, torch.Tensor], k: int) -> torch.nn.RNNBase:
    """An nn.RNN / GRU / LSTM holding member k's weights (float64, batch_first)."""
    h, i = p["w_hh"].shape[-1], p["w_ih"].shape[-1]
    cls = {"rnn_tanh": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    m = cls(i, h, batch_first=True).double()
    with torch.no_grad():
        m.weight_ih_l0.copy_(p["w_ih"][k])
        m.weight_hh_l0.copy_(p["w_hh"][k])
        m.bias_ih_l0.copy_(p["b_ih"][k])
        m.bias_hh_l0.copy_(p["b_hh"][k])
    return m


@pytest.mark.parametrize("kind", KINDS)
def test_forward_and_gradients_match_torch_nn(kind: str) -> None:
    k, b, t, h, i = 3, 5, 7, 4, 2
    g = torch.Generator().manual_seed(0)
    params = init_params(kind, h, i, [11, 12, 13], dtype=F64)
    # perturb so gates are not all near their linear regime
    params = {n: (v + 0.5 * torch.randn(v.shape, generator=g, dtype=F64)).requires_grad_() for n, v in params.items()}
    x = torch.randn(k, b, t, i, generator=g, dtype=F64)
    weights = torch.randn(k, b, t, h, generator=g, dtype=F64)  # a loss that touches every state

    hs, _ = run_cell(kind, params, x)  # (K, B, T, H)
    (hs * weights).sum().backward()
    for m in range(k):
        module = torch_module(kind, {n: v.detach() for n, v in params.items()}, m)
        out, _ = module(x[m])
        torch.testing.assert_close(hs[m].detach(), out.detach(), rtol=1e-10, atol=1e-12)
        (out * weights[m]).sum().backward()
        for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"), ("b_hh", "bias_hh_l0")):
            torch.testing.assert_close(params[ours].grad[m], getattr(module, theirs).grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", KINDS)
def test_init_is_seeded_and_orthogonal(kind: str) -> None:
    h = 6
    a, b = init_params_one(kind, h, 2, 5, F64), init_params_one(kind, h, 2, 5, F64)
    c = init_params_one(kind, h, 2, 6, F64)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["w_hh"], c["w_hh"])
    w = a["w_hh"]  # (G*H, H): orthonormal columns over the whole stacked matrix
    assert w.shape == (GATES[kind] * h, h)
    torch.testing.assert_close(w.T @ w, torch.eye(h, dtype=F64), rtol=0, atol=1e-10)
    bound = h**-0.5
    for n in ("w_ih", "b_ih", "b_hh", "head_w"):
        assert float(a[n].abs().max()) <= bound
