"""Recurrent cells with batched weights: K independent networks (one per seed) at once.

Parameters are a plain dict of tensors whose leading dim is K (one slice per seed):

    w_ih   (K, G*H, I)   input weights, gates stacked in PyTorch's order
    w_hh   (K, G*H, H)   recurrent weights
    b_ih   (K, G*H)
    b_hh   (K, G*H)
    head_w (K, H)        linear readout H -> 1
    head_b (K,)

G = 1 (rnn_tanh), 3 (gru: r, z, n) or 4 (lstm: i, f, g, o), exactly as torch.nn.RNN / GRU /
LSTM, so a slice k can be copied into those modules and must give the same outputs.

The state is a tensor (K, B, H) for rnn_tanh and gru, and a tuple (h, c) for lstm.
"""

from __future__ import annotations

import math

import torch

GATES = {"rnn_tanh": 1, "gru": 3, "lstm": 4}
CORE_KEYS = ("w_ih", "w_hh", "b_ih", "b_hh")
HEAD_KEYS = ("head_w", "head_b")

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def check_kind(kind: str) -> int:
    if kind not in GATES:
        from worlds.errors import SpecError

        raise SpecError("model", f"unknown model {kind!r}; valid: {sorted(GATES)}")
    return GATES[kind]


def init_params_one(
    kind: str, hidden_dim: int, input_dim: int, seed: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Parameters of one network, from its seed alone (SCIENCE.md §2).

    PyTorch's default init for the layer (U(-1/sqrt(H), 1/sqrt(H)) for every weight and
    bias, in the module's parameter order), then orthogonal (gain 1) on the whole stacked
    recurrent matrix; the head as nn.Linear's default (also U(-1/sqrt(H), 1/sqrt(H))).
    Generated on the CPU in float64 then cast, so the numbers do not depend on the device.
    """
    g = check_kind(kind)
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(hidden_dim)
    shapes = {
        "w_ih": (g * hidden_dim, input_dim),
        "w_hh": (g * hidden_dim, hidden_dim),
        "b_ih": (g * hidden_dim,),
        "b_hh": (g * hidden_dim,),
    }
    p = {k: torch.empty(s, dtype=torch.float64).uniform_(-bound, bound, generator=gen) for k, s in shapes.items()}
    torch.nn.init.orthogonal_(p["w_hh"], gain=1.0, generator=gen)
    p["head_w"] = torch.empty(hidden_dim, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
    p["head_b"] = torch.empty((), dtype=torch.float64).uniform_(-bound, bound, generator=gen)
    return {k: v.to(dtype) for k, v in p.items()}


def init_params(
    kind: str,
    hidden_dim: int,
    input_dim: int,
    seeds: list[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Stack the per-seed parameters into (K, ...) tensors on `device`."""
    per_seed = [init_params_one(kind, hidden_dim, input_dim, s, dtype) for s in seeds]
    return {k: torch.stack([p[k] for p in per_seed]).to(device) for k in per_seed[0]}


def init_state(kind: str, params: dict[str, torch.Tensor], batch: int) -> State:
    k, h = params["head_w"].shape
    z = params["w_hh"].new_zeros(k, batch, h)
    return (z, z.clone()) if kind == "lstm" else z


def hidden(state: State) -> torch.Tensor:
    """The h part of a state, (K, B, H)."""
    return state[0] if isinstance(state, tuple) else state


def cell_step(kind: str, params: dict[str, torch.Tensor], x_t: torch.Tensor, state: State) -> State:
    """One time step. x_t (K, B, I), state (K, B, H) or ((K, B, H), (K, B, H))."""
    h = hidden(state)
    gi = torch.baddbmm(params["b_ih"].unsqueeze(1), x_t, params["w_ih"].transpose(1, 2))  # (K, B, G*H)
    gh = torch.baddbmm(params["b_hh"].unsqueeze(1), h, params["w_hh"].transpose(1, 2))  # (K, B, G*H)
    if kind == "rnn_tanh":
        return torch.tanh(gi + gh)
    if kind == "gru":
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1.0 - z) * n + z * h
    if kind == "lstm":
        c = state[1]
        i, f, gg, o = (gi + gh).chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new
    check_kind(kind)
    raise AssertionError("unreachable")


def run_cell(
    kind: str, params: dict[str, torch.Tensor], x: torch.Tensor, state: State | None = None
) -> tuple[torch.Tensor, State]:
    """Unroll over time. x (K, B, T, I) -> hidden states (K, B, T, H) and the final state."""
    if state is None:
        state = init_state(kind, params, x.shape[1])
    hs = []
    for t in range(x.shape[2]):
        state = cell_step(kind, params, x[:, :, t], state)
        hs.append(hidden(state))
    return torch.stack(hs, dim=2), state


def readout(params: dict[str, torch.Tensor], hs: torch.Tensor) -> torch.Tensor:
    """Linear head at every step: hs (K, B, T, H) -> predictions (K, B, T)."""
    return torch.einsum("kbth,kh->kbt", hs, params["head_w"]) + params["head_b"][:, None, None]
