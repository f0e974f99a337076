"""Exact one-step state Jacobians J = ∂s[t+1]/∂s[t] of the batched cells, written out by hand.

The state s is what the cell carries from one step to the next:

    rnn_tanh, gru   s = h                S = H
    lstm            s = (h, c) stacked   S = 2H, h first, then c

Decision (LSTM): SCIENCE.md writes J = ∂h[t+1]/∂h[t], but for an LSTM h alone is not a
state: h[t+1] depends on c[t] as well, so ∂h[t+1]/∂h[t] is not the linearisation of any
map and a product of them is not a tangent flow. The spectrum of the full (h, c) map is the
proper one; an LSTM therefore reports 2H exponents.

Shapes follow trainers.cells: params dict of (K, ...) tensors, inputs (K, B, T, I) with B
independent sequences per member. Everything is evaluated in the dtype of the params
passed in; the dynamics code casts to float64 first (see trainers.dynamics).

autograd (tests/trainers/test_dynamics.py) is the oracle these formulas are checked against.
"""

from __future__ import annotations

import torch

from trainers.cells import State, cell_step, check_kind, hidden, init_state


def state_size(kind: str, hidden_dim: int) -> int:
    """S, the dimension of the state the Jacobians act on."""
    check_kind(kind)
    return 2 * hidden_dim if kind == "lstm" else hidden_dim


def flat_state(state: State) -> torch.Tensor:
    """A cell state as one (K, B, S) tensor (LSTM: h then c)."""
    return torch.cat(state, dim=-1) if isinstance(state, tuple) else state


def _rows(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """diag(v) @ W for every (k, b): v (K, B, H), w (K, H, H) -> (K, B, H, H)."""
    return v.unsqueeze(-1) * w.unsqueeze(1)


def _gate_sum(coef: list[torch.Tensor], w: list[torch.Tensor]) -> torch.Tensor:
    """Σ_g diag(coef_g) W_g for every (k, b): coef_g (K, B, H), W_g (K, H, H) -> (K, B, H, H).

    One contraction over the gate axis writes the (K, B, H, H) result in a single pass,
    instead of one full-size temporary per gate (these tensors are the big ones).
    """
    c = torch.stack(coef, dim=2)  # (K, B, G, H)
    ws = torch.stack(w, dim=1)  # (K, G, H, H)
    return torch.einsum("kbgi,kgij->kbij", c, ws)


def step_with_jacobian(
    kind: str, params: dict[str, torch.Tensor], x_t: torch.Tensor, state: State
) -> tuple[State, torch.Tensor]:
    """One step of the cell and its state Jacobian.

    x_t (K, B, I), state as in trainers.cells -> (new state, J (K, B, S, S)) with
    J[k, b] = ∂s_new/∂s for member k, sequence b. The new state equals cell_step's.
    """
    check_kind(kind)
    h = hidden(state)  # (K, B, H)
    n_h = h.shape[-1]
    w_hh = params["w_hh"]  # (K, G*H, H)
    gi = torch.baddbmm(params["b_ih"].unsqueeze(1), x_t, params["w_ih"].transpose(1, 2))  # (K, B, G*H)
    gh = torch.baddbmm(params["b_hh"].unsqueeze(1), h, w_hh.transpose(1, 2))  # (K, B, G*H)

    if kind == "rnn_tanh":
        h_new = torch.tanh(gi + gh)
        return h_new, _rows(1.0 - h_new * h_new, w_hh)

    if kind == "gru":
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)  # h_n = W_hn h + b_hn
        w_r, w_z, w_n = w_hh.chunk(3, dim=1)  # (K, H, H) each
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h_new = (1.0 - z) * n + z * h
        # dn/dh = diag(1 - n²) [diag(r) W_hn + diag(h_n r (1 - r)) W_hr]
        # dh'/dh = diag(1 - z) dn/dh + diag((h - n) z (1 - z)) W_hz + diag(z)
        dn = (1.0 - z) * (1.0 - n * n)
        jac = _gate_sum([dn * r, dn * h_n * r * (1.0 - r), (h - n) * z * (1.0 - z)], [w_n, w_r, w_z])
        jac.diagonal(dim1=-2, dim2=-1).add_(z)
        return h_new, jac

    # lstm
    c = state[1]
    i_g, f_g, g_g, o_g = (gi + gh).chunk(4, dim=-1)
    w_i, w_f, w_g, w_o = w_hh.chunk(4, dim=1)  # (K, H, H) each
    i = torch.sigmoid(i_g)
    f = torch.sigmoid(f_g)
    g = torch.tanh(g_g)
    o = torch.sigmoid(o_g)
    c_new = f * c + i * g
    tc = torch.tanh(c_new)
    h_new = o * tc
    # dc'/dh = diag(c f(1-f)) W_hf + diag(g i(1-i)) W_hi + diag(i (1-g²)) W_hg;  dc'/dc = diag(f)
    # dh'/dh = diag(tanh(c') o(1-o)) W_ho + diag(o (1 - tanh²c')) dc'/dh;  dh'/dc = diag(o (1-tanh²c') f)
    cf, ci, cg = c * f * (1.0 - f), g * i * (1.0 - i), i * (1.0 - g * g)
    do = o * (1.0 - tc * tc)  # (K, B, H)
    jac = h.new_empty(*h.shape[:2], 2 * n_h, 2 * n_h)  # (K, B, 2H, 2H), blocks [[hh, hc], [ch, cc]]
    jac[..., n_h:, :n_h] = _gate_sum([cf, ci, cg], [w_f, w_i, w_g])
    jac[..., :n_h, :n_h] = _gate_sum([do * cf, do * ci, do * cg, tc * o * (1.0 - o)], [w_f, w_i, w_g, w_o])
    jac[..., :n_h, n_h:] = torch.diag_embed(do * f)
    jac[..., n_h:, n_h:] = torch.diag_embed(f)
    return (h_new, c_new), jac


def state_jacobians(
    kind: str,
    params: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    state: State | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drive the cells with inputs (K, B, T, I) from `state` (default h0 = 0).

    Returns states (K, B, T+1, S) — states[:, :, t] is the state BEFORE step t, so
    states[:, :, 0] is the initial one — and Jacobians (K, B, T, S, S) with
    jac[:, :, t] = ∂states[:, :, t+1] / ∂states[:, :, t].

    Memory is K·B·T·S² numbers; for long runs use step_with_jacobian step by step
    (trainers.dynamics.lyapunov_exponents does, and never stores all T).
    """
    if state is None:
        state = init_state(kind, params, inputs.shape[1])
    states = [flat_state(state)]
    jacs = []
    for t in range(inputs.shape[2]):
        state, jac = step_with_jacobian(kind, params, inputs[:, :, t], state)
        states.append(flat_state(state))
        jacs.append(jac)
    return torch.stack(states, dim=2), torch.stack(jacs, dim=2)


def autograd_step_jacobian(
    kind: str, params: dict[str, torch.Tensor], x_t: torch.Tensor, state: State
) -> torch.Tensor:
    """Reference J (K, B, S, S) by autograd: one backward pass per output coordinate.

    Slow on purpose (S backward passes per step, each giving one row of J): this is the oracle for tests and the
    reference path of benchmarks/lyapunov.py, never used in production.
    """
    s = flat_state(state).detach().requires_grad_(True)  # (K, B, S)
    n_h = hidden(state).shape[-1]
    st: State = (s[..., :n_h], s[..., n_h:]) if isinstance(state, tuple) else s
    out = flat_state(cell_step(kind, params, x_t, st))  # (K, B, S)
    rows = []
    for i in range(out.shape[-1]):
        # members and sequences are independent, so summing over them keeps each row exact
        (g,) = torch.autograd.grad(out[..., i].sum(), s, retain_graph=True)
        rows.append(g)
    return torch.stack(rows, dim=-2)  # (K, B, S, S)
