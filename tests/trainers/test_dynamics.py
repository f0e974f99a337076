"""Jacobians against autograd, Lyapunov spectra against numpy's, coasting and hallucination on
hand-built networks whose answers are known."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from stats.lyapunov import lyapunov_spectrum
from trainers.cells import cell_step, init_params, run_cell
from trainers.config import RESULT_COLUMNS, TrialConfig
from trainers.dynamics import (
    DYNAMICS_COLUMNS,
    coast_metrics,
    coast_predictions,
    dynamics_columns,
    lyapunov_exponents,
    lyapunov_window,
    state_jacobians,
)
from trainers.jacobians import autograd_step_jacobian, flat_state, step_with_jacobian
from worlds.errors import SpecError

KINDS = ("rnn_tanh", "gru", "lstm")
F64 = torch.float64


def random_params(kind: str, h: int, i: int, k: int, seed: int) -> dict[str, torch.Tensor]:
    """Orthogonal init plus large noise, so gates are anywhere from linear to saturated."""
    g = torch.Generator().manual_seed(seed)
    p = init_params(kind, h, i, list(range(seed, seed + k)), dtype=F64)
    return {n: v + 0.7 * torch.randn(v.shape, generator=g, dtype=F64) for n, v in p.items()}


def random_state(kind: str, k: int, b: int, h: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    hh = torch.tanh(2 * torch.randn(k, b, h, generator=g, dtype=F64))
    return (hh, 2 * torch.randn(k, b, h, generator=g, dtype=F64)) if kind == "lstm" else hh


def jacrev_oracle(kind: str, params, x_t, state) -> torch.Tensor:
    """∂s'/∂s by torch.func.jacrev of one member / one sequence at a time."""
    s = flat_state(state)
    k_n, b_n, n_s = s.shape
    h = n_s // 2 if kind == "lstm" else n_s
    out = torch.empty(k_n, b_n, n_s, n_s, dtype=F64)
    for k in range(k_n):
        pk = {n: v[k : k + 1] for n, v in params.items()}
        for b in range(b_n):

            def f(v: torch.Tensor, k: int = k, b: int = b, pk=pk) -> torch.Tensor:
                st = (v[:h].view(1, 1, h), v[h:].view(1, 1, h)) if kind == "lstm" else v.view(1, 1, h)
                return flat_state(cell_step(kind, pk, x_t[k : k + 1, b : b + 1], st)).reshape(-1)

            out[k, b] = torch.func.jacrev(f)(s[k, b])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_analytic_jacobians_equal_autograd(kind: str) -> None:
    k, b, h, i = 2, 3, 5, 2
    params = random_params(kind, h, i, k, seed=7)
    state = random_state(kind, k, b, h, seed=8)
    x_t = torch.randn(k, b, i, generator=torch.Generator().manual_seed(9), dtype=F64)
    new_state, jac = step_with_jacobian(kind, params, x_t, state)
    oracle = jacrev_oracle(kind, params, x_t, state)
    assert jac.shape == (k, b, 2 * h if kind == "lstm" else h, 2 * h if kind == "lstm" else h)
    torch.testing.assert_close(jac, oracle, atol=1e-5, rtol=0)
    assert float(oracle.abs().max()) > 0.1  # not a vacuous comparison
    torch.testing.assert_close(flat_state(new_state), flat_state(cell_step(kind, params, x_t, state)))
    # the per-row autograd reference (used by benchmarks/lyapunov.py) agrees too
    torch.testing.assert_close(autograd_step_jacobian(kind, params, x_t, state), oracle, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_state_jacobians_along_a_trajectory(kind: str) -> None:
    k, b, t, h, i = 2, 2, 6, 3, 2
    params = random_params(kind, h, i, k, seed=1)
    x = torch.randn(k, b, t, i, generator=torch.Generator().manual_seed(2), dtype=F64)
    states, jacs = state_jacobians(kind, params, x)
    n_s = 2 * h if kind == "lstm" else h
    assert states.shape == (k, b, t + 1, n_s) and jacs.shape == (k, b, t, n_s, n_s)
    hs, _ = run_cell(kind, params, x)
    torch.testing.assert_close(states[:, :, 1:, :h], hs)
    for step in range(t):
        s = states[:, :, step]
        st = (s[..., :h], s[..., h:]) if kind == "lstm" else s
        oracle = jacrev_oracle(kind, params, x[:, :, step], st)
        torch.testing.assert_close(jacs[:, :, step], oracle, atol=1e-5, rtol=0)


@pytest.mark.parametrize("qr", ["torch", "numpy"])
@pytest.mark.parametrize("kind", KINDS)
def test_fast_spectrum_equals_numpy_benettin(kind: str, qr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a chunk smaller than the run, so the chunked Jacobians are exercised across chunk ends
    # (7 steps per chunk for S = 4, 1 for the LSTM S = 8)
    monkeypatch.setattr("trainers.dynamics.JACOBIAN_CHUNK_NUMBERS", 7 * 2 * 3 * 4**2)
    k, b, t, h, i = 2, 3, 30, 4, 2
    params = random_params(kind, h, i, k, seed=3)
    x = torch.randn(k, b, t, i, generator=torch.Generator().manual_seed(4), dtype=F64)
    fast = lyapunov_exponents(kind, params, x, warmup=10, steps=20, qr=qr)  # (K, B, S)
    _, jacs = state_jacobians(kind, params, x)
    ref = lyapunov_spectrum(jacs[:, :, 10:30].numpy())
    np.testing.assert_allclose(fast.numpy(), ref, atol=1e-10)


def test_linear_regime_rnn_has_log_eigenvalue_exponents() -> None:
    # state stays at 0 (no input, no bias), where tanh' = 1: J = W_hh exactly
    h = 3
    w = torch.tensor([[0.5, 1.0, 0.0], [0.0, -0.8, 0.0], [0.0, 0.0, 0.3]], dtype=F64)
    params = {
        "w_ih": torch.zeros(1, h, 2, dtype=F64),
        "w_hh": w[None],
        "b_ih": torch.zeros(1, h, dtype=F64),
        "b_hh": torch.zeros(1, h, dtype=F64),
        "head_w": torch.ones(1, h, dtype=F64),
        "head_b": torch.zeros(1, dtype=F64),
    }
    lam = lyapunov_exponents("rnn_tanh", params, torch.zeros(1, 1, 400, 2), warmup=0, steps=400)[0, 0]
    np.testing.assert_allclose(lam.numpy(), np.log([0.8, 0.5, 0.3]), atol=5e-3)


@pytest.mark.parametrize(
    ("t", "warmup", "steps", "expected"),
    [(256, 50, 150, (50, 150)), (200, 50, 150, (50, 150)), (64, 50, 150, (16, 48)), (128, 50, 150, (32, 96)), (64, 5, 20, (5, 20))],
)
def test_lyapunov_window(t: int, warmup: int, steps: int, expected: tuple[int, int]) -> None:
    assert lyapunov_window(t, warmup, steps) == expected


def test_lyapunov_exponents_validation() -> None:
    params = random_params("gru", 2, 2, 1, seed=0)
    with pytest.raises(SpecError, match="qr"):
        lyapunov_exponents("gru", params, torch.zeros(1, 1, 10, 2), warmup=2, steps=5, qr="lapack")
    with pytest.raises(SpecError, match="inputs"):
        lyapunov_exponents("gru", params, torch.zeros(1, 10, 2), warmup=2, steps=5)


def test_lyapunov_window_validation() -> None:
    with pytest.raises(SpecError, match="lyap_steps"):
        lyapunov_window(64, 5, 0)
    with pytest.raises(SpecError, match="inputs"):
        lyapunov_window(1, 0, 5)


# ---------------------------------------------------------------- hand-built coasting models


def rotation_rnn(theta: float, rho: float, kick: float = 0.01, gain: float = 100.0) -> dict[str, torch.Tensor]:
    """rnn_tanh, H = 2: h' = tanh(rho·R(theta) h + kick·x0); amplitude ~kick keeps tanh linear.
    The head reads gain·h_0, so the output is a sine of amplitude ~gain·kick (free-running,
    whatever the input does after the first step)."""
    c, s = math.cos(theta), math.sin(theta)
    return {
        "w_ih": torch.tensor([[[kick, 0.0], [0.0, 0.0]]], dtype=F64),
        "w_hh": rho * torch.tensor([[[c, -s], [s, c]]], dtype=F64),
        "b_ih": torch.zeros(1, 2, dtype=F64),
        "b_hh": torch.zeros(1, 2, dtype=F64),
        "head_w": torch.tensor([[gain, 0.0]], dtype=F64),
        "head_b": torch.zeros(1, dtype=F64),
    }


def constant_rnn(value: float) -> dict[str, torch.Tensor]:
    p = rotation_rnn(0.3, 1.0)
    p["w_ih"] = torch.zeros_like(p["w_ih"])
    p["head_b"] = torch.tensor([value], dtype=F64)
    return p


def kick_inputs(t: int = 160) -> torch.Tensor:
    x = torch.zeros(1, 1, t, 2, dtype=F64)
    x[0, 0, 0, 0] = 1.0  # one kick at step 0, then the network runs on its own
    x[0, 0, :, 1] = torch.linspace(0, 1, t)  # a time channel the rotation ignores
    return x


def test_pure_sine_output_is_inertial() -> None:
    theta = 2 * math.pi / 10
    pred, cut = coast_predictions("rnn_tanh", rotation_rnn(theta, 1.0), kick_inputs(), 100, 50)
    assert cut == 100 and pred.shape == (1, 1, 150)
    m = coast_metrics(pred, cut)
    assert m["retention"][0, 0] == pytest.approx(1.0, abs=0.02)
    assert m["autocorr"][0, 0] == pytest.approx(math.cos(theta), abs=0.02)
    assert m["mean_abs"][0, 0] == pytest.approx(2 / math.pi, rel=0.05)  # mean |sin|
    assert abs(m["decay"][0, 0]) < 0.01


def test_geometric_decay_is_dissipative_with_known_rate() -> None:
    rho = 0.9
    pred, cut = coast_predictions("rnn_tanh", rotation_rnn(0.0, rho), kick_inputs(), 100, 50)
    m = coast_metrics(pred, cut)
    # linear regime: the output is c·0.9^t, so the window stds scale by 0.9^50 and the slope is log 0.9
    assert m["retention"][0, 0] == pytest.approx(rho**50, rel=1e-3)
    assert m["decay"][0, 0] == pytest.approx(math.log(rho), abs=1e-4)
    assert m["autocorr"][0, 0] == pytest.approx(1.0, abs=1e-6)  # a geometric sequence is perfectly lag-correlated


def test_decay_needs_ten_points_above_threshold() -> None:
    # 0.5^t > 0.01 only for t <= 6: 7 points -> NaN
    pred, cut = coast_predictions("rnn_tanh", rotation_rnn(0.0, 0.5), kick_inputs(30), 20, 30)
    assert math.isnan(coast_metrics(pred, cut)["decay"][0, 0])


def test_cut_after_the_data_moves_to_the_end() -> None:
    pred, cut = coast_predictions("rnn_tanh", rotation_rnn(0.6, 1.0), kick_inputs(40), 100, 25)
    assert cut == 40 and pred.shape == (1, 1, 65)


def config(**kw) -> TrialConfig:
    base = dict(lyap_sequences=2, lyap_warmup=5, lyap_steps=10, coast_cut=100, coast_len=50, halluc_cut=50, halluc_len=50)
    return TrialConfig(**{**base, **kw})


def stack(*ps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in ps]) for k in ps[0]}


def test_hallucination_and_nihilism_on_hand_built_models() -> None:
    # members: a sine generator (period 10: whole periods in the 20-step windows), a small constant, a large constant, a sine on a structured world
    params = stack(rotation_rnn(2 * math.pi / 10, 1.0), constant_rnn(0.01), constant_rnn(0.2), rotation_rnn(0.5, 1.0))
    x = kick_inputs(160).expand(4, 3, 160, 2).clone()
    rows = dynamics_columns("rnn_tanh", params, x, x, ["null", "null_iid", "null", "structured"], config())
    assert [r["halluc_label"] for r in rows] == ["hallucination", "nihilism", "hallucination", ""]
    assert rows[0]["halluc_var"] == pytest.approx(0.5, rel=0.05)  # sine of amplitude ~1
    assert rows[1]["halluc_var"] == pytest.approx(0.0, abs=1e-20)
    assert rows[1]["halluc_mean_abs"] == pytest.approx(0.01)
    assert rows[2]["halluc_mean_abs"] == pytest.approx(0.2)
    assert math.isnan(rows[3]["halluc_var"]) and math.isnan(rows[3]["halluc_mean_abs"])
    assert rows[0]["coast_label"] == "inertial" and rows[0]["coast_retention"] == pytest.approx(1.0, abs=0.02)
    # a constant output has no pre-cut variation: retention undefined, no label
    assert math.isnan(rows[1]["coast_retention"]) and rows[1]["coast_label"] == ""
    # rotation by 0.5 rad at unit modulus: both exponents ~0 -> marginal
    assert rows[3]["lyap_label"] == "marginal" and abs(rows[3]["lyap_1"]) < 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_dynamics_columns_keys_shapes_and_switches(kind: str) -> None:
    k, n, t, h = 3, 4, 60, 3
    params = {p: v.float() for p, v in random_params(kind, h, 2, k, seed=11).items()}
    x = torch.randn(k, n, t, 2, generator=torch.Generator().manual_seed(12))
    roles = ["structured", "null", "null_iid"]
    rows = dynamics_columns(kind, params, x, x, roles, config(coast_cut=30, coast_len=25, halluc_cut=10, halluc_len=20))
    assert len(rows) == k
    assert set(DYNAMICS_COLUMNS) <= set(RESULT_COLUMNS)
    n_s = 2 * h if kind == "lstm" else h
    for r in rows:
        assert set(r) == set(DYNAMICS_COLUMNS)
        assert len(r["lyap_spectrum"]) == n_s and r["lyap_spectrum"] == sorted(r["lyap_spectrum"], reverse=True)
        assert r["lyap_1"] == r["lyap_spectrum"][0]
        assert r["lyap_sum"] == pytest.approx(sum(r["lyap_spectrum"]))
        assert r["lyap_label"] in ("sink", "marginal", "selective contraction", "chaotic")
        assert r["coast_label"] in ("inertial", "dissipative")
        for c in ("lyap_gap", "lyap_ky_dim", "coast_retention", "coast_autocorr", "coast_mean_abs"):
            assert isinstance(r[c], float) and math.isfinite(r[c]), c
    assert math.isnan(rows[0]["halluc_var"]) and rows[0]["halluc_label"] == ""
    assert all(rows[j]["halluc_label"] in ("hallucination", "nihilism") for j in (1, 2))

    # λ1 of a member is the mean over the first lyap_sequences sequences of per-sequence λ1
    per_seq = lyapunov_exponents(kind, params, x[:, :2], warmup=5, steps=10)
    assert rows[1]["lyap_1"] == pytest.approx(float(per_seq[1, :, 0].mean()))

    # a member's numbers do not depend on the other members beside it
    solo = dynamics_columns(
        kind, {p: v[1:2] for p, v in params.items()}, x[1:2], x[1:2], ["null"],
        config(coast_cut=30, coast_len=25, halluc_cut=10, halluc_len=20),
    )[0]
    for c in DYNAMICS_COLUMNS:
        if isinstance(solo[c], float):
            assert solo[c] == pytest.approx(rows[1][c], rel=1e-9, abs=1e-12), c
        else:
            assert solo[c] == pytest.approx(rows[1][c]) if c == "lyap_spectrum" else solo[c] == rows[1][c]

    off = dynamics_columns(kind, params, x, x, roles, config(lyapunov=False, coasting=False))
    for r in off:
        assert r["lyap_spectrum"] == [] and r["lyap_label"] == r["coast_label"] == r["halluc_label"] == ""
        assert all(math.isnan(r[c]) for c in DYNAMICS_COLUMNS if c not in ("lyap_spectrum",) and not c.endswith("_label"))


def test_diverged_member_gets_nan_others_do_not() -> None:
    params = random_params("gru", 3, 2, 2, seed=5)
    params["w_hh"][1, 0, 0] = math.nan
    x = torch.randn(2, 2, 40, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    rows = dynamics_columns("gru", params, x, x, ["null", "null"], config(coast_cut=20, coast_len=15, halluc_cut=10, halluc_len=15))
    assert math.isfinite(rows[0]["lyap_1"]) and math.isfinite(rows[0]["halluc_var"])
    assert math.isnan(rows[1]["lyap_1"]) and all(math.isnan(v) for v in rows[1]["lyap_spectrum"])
    assert rows[1]["lyap_label"] == "" and rows[1]["halluc_label"] == ""


def test_dynamics_columns_validation() -> None:
    params = random_params("gru", 3, 2, 2, seed=5)
    x = torch.zeros(2, 2, 20, 2)
    with pytest.raises(SpecError) as e:
        dynamics_columns("gru", params, x, x, ["null"], config())
    assert e.value.field == "roles"
    with pytest.raises(SpecError) as e:
        dynamics_columns("gru", params, x[:1], x, ["null", "null"], config())
    assert e.value.field == "inputs_full_time"
    with pytest.raises(SpecError) as e:
        dynamics_columns("mlp", params, x, x, ["null", "null"], config())
    assert e.value.field == "model"


def test_config_switch_fields_exist() -> None:
    names = {f.name for f in dataclasses.fields(TrialConfig)}
    assert {"lyapunov", "lyap_sequences", "lyap_warmup", "lyap_steps", "coasting", "coast_cut", "coast_len", "halluc_cut", "halluc_len"} <= names
