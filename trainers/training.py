"""The one training loop: K networks (members) trained at once with batched weights.

Each member k owns everything that decides its result: its init (from its seed alone), its
batch order and random-time permutations (generators derived from its seed), its data set
and its learning rate. Nothing a member computes reads another member's numbers, so a
seed's result does not depend on which other seeds share the batch (tests check this).

Loss (SCIENCE.md §2): Gaussian NLL with fixed sigma = 0.05, averaged over batch x (T-1)
steps per member; the prediction made at step t is for obs[t+1]. Optimiser: Adam written
out on the dict of (K, ...) tensors, the same arithmetic as torch.optim.Adam per member.
"""

from __future__ import annotations

import importlib
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from trainers.cells import CORE_KEYS, HEAD_KEYS, readout, run_cell

SIGMA = 0.05
NLL_CONST = 0.5 * math.log(2.0 * math.pi * SIGMA**2)  # -2.0768: the log-normaliser per step
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
LOSS_WINDOW = 100  # final_train_loss = mean member loss over the last LOSS_WINDOW steps

Params = dict[str, torch.Tensor]
LossAndGrads = Callable[
    [str, Params, torch.Tensor, torch.Tensor, tuple[str, ...]], tuple[torch.Tensor, Params]
]


def stream_seed(seed: int, stream: str) -> int:
    """A reproducible 63-bit seed for one named random stream of one model seed.

    Every random choice a member makes (batch order, random time, probe split, scramble...)
    gets its own stream, so adding a new use of randomness never shifts the others.
    """
    words = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def member_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def trainable_keys(mode: str) -> tuple[str, ...]:
    """Parameter names the optimiser updates in `mode` (readout_only freezes the core)."""
    return HEAD_KEYS if mode == "readout_only" else CORE_KEYS + HEAD_KEYS


def gaussian_nll(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise 0.5 * ((y - yhat)^2 / sigma^2 + log(2 pi sigma^2))."""
    return 0.5 * (target - pred) ** 2 / SIGMA**2 + NLL_CONST


def predict(kind: str, params: Params, x: torch.Tensor) -> torch.Tensor:
    """x (K, B, T, I) -> predictions (K, B, T); entry t is the prediction for obs[t+1]."""
    hs, _ = run_cell(kind, params, x)  # (K, B, T, H)
    return readout(params, hs)


def member_loss(kind: str, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian NLL per member. x (K, B, T, I), y (K, B, T-1) = obs[:, :, 1:] -> (K,)."""
    pred = predict(kind, params, x[:, :, :-1])  # the last step's prediction has no target
    return gaussian_nll(pred, y).mean(dim=(1, 2))


def loss_and_grads(
    kind: str, params: Params, x: torch.Tensor, y: torch.Tensor, trainable: tuple[str, ...]
) -> tuple[torch.Tensor, Params]:
    """Autograd reference: per-member loss (K,) and gradients of the `trainable` params.

    Members are independent, so the gradient of the summed loss is each member's own.
    """
    leaves = {k: v.detach().requires_grad_(k in trainable) for k, v in params.items()}
    with torch.enable_grad():
        loss = member_loss(kind, leaves, x, y)
        grads = torch.autograd.grad(loss.sum(), [leaves[k] for k in trainable])
    return loss.detach(), dict(zip(trainable, grads, strict=True))


def pick_loss_and_grads(kind: str, device: torch.device, trainable: tuple[str, ...]) -> LossAndGrads:
    """The fast path (trainers.fastpath) where it applies, else the autograd reference."""
    try:
        fastpath = importlib.import_module("trainers.fastpath")
    except ModuleNotFoundError as e:
        if e.name != "trainers.fastpath":
            raise
        return loss_and_grads
    if fastpath.available(kind, device, trainable):
        return fastpath.loss_and_grads
    return loss_and_grads


# ---------------------------------------------------------------- Adam, batched over members


@dataclass
class AdamState:
    lr: torch.Tensor  # (K,)
    exp_avg: Params
    exp_avg_sq: Params
    steps: torch.Tensor  # (K,) float64: updates taken so far by each member


def adam_init(params: Params, trainable: tuple[str, ...], lr: torch.Tensor) -> AdamState:
    k = lr.shape[0]
    return AdamState(
        lr=lr.to(torch.float64),
        exp_avg={n: torch.zeros_like(params[n]) for n in trainable},
        exp_avg_sq={n: torch.zeros_like(params[n]) for n in trainable},
        steps=torch.zeros(k, dtype=torch.float64, device=lr.device),
    )


def _per_member(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) broadcastable against `like` (K, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def adam_step(params: Params, grads: Params, state: AdamState, active: torch.Tensor) -> Params:
    """One Adam update of every trainable tensor for the members where `active` (K,) is True.

    Same arithmetic as torch.optim.Adam's single-tensor path (beta 0.9/0.999, eps 1e-8, no
    weight decay); the bias corrections are per member because a member that stopped
    (diverged) keeps its step count.
    """
    b1, b2 = ADAM_BETAS
    state.steps = state.steps + active.to(torch.float64)
    t = state.steps.clamp(min=1.0)
    step_size = (state.lr / (1.0 - b1**t)).to(params[next(iter(grads))].dtype)  # (K,)
    bc2_sqrt = ((1.0 - b2**t) ** 0.5).to(step_size.dtype)  # (K,)
    out = dict(params)
    for name, g in grads.items():
        on = _per_member(active, g)
        m = state.exp_avg[name].lerp(g, 1.0 - b1)
        v = state.exp_avg_sq[name] * b2 + (1.0 - b2) * g * g
        denom = v.sqrt() / _per_member(bc2_sqrt, g) + ADAM_EPS
        p = params[name] - _per_member(step_size, g) * m / denom
        state.exp_avg[name] = torch.where(on, m, state.exp_avg[name])
        state.exp_avg_sq[name] = torch.where(on, v, state.exp_avg_sq[name])
        out[name] = torch.where(on, p, params[name])
    return out


# ---------------------------------------------------------------- batches


class Batches:
    """Training batches for K members; member k draws from its own generator and data set.

    inputs[k] (N_k, T, I) / obs[k] (N_k, T) may be the same tensor objects for members that
    share a data set; those are gathered in one indexing operation.
    """

    def __init__(
        self,
        inputs: list[torch.Tensor],
        obs: list[torch.Tensor],
        seeds: list[int],
        time_conds: list[str],
        batch_size: int,
    ) -> None:
        from worlds import apply_time_cond

        self.apply_time_cond = apply_time_cond
        self.inputs, self.obs, self.batch_size = inputs, obs, batch_size
        self.sizes = [int(x.shape[0]) for x in inputs]
        self.device = inputs[0].device
        self.index_gens = [member_generator(s, "batches") for s in seeds]
        self.time_gens = [member_generator(s, "train_time") for s in seeds]
        self.time_conds = time_conds
        groups: dict[int, list[int]] = {}
        for k, x in enumerate(inputs):
            groups.setdefault(id(x), []).append(k)
        self.groups = [(inputs[m[0]], obs[m[0]], torch.tensor(m, device=self.device)) for m in groups.values()]
        self.cond_groups = time_cond_groups(time_conds, self.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> x (K, B, T, I) time-conditioned inputs, y (K, B, T-1) the raw targets obs[1:]."""
        idx = torch.stack(
            [torch.randint(n, (self.batch_size,), generator=g) for n, g in zip(self.sizes, self.index_gens, strict=True)]
        ).to(self.device)  # (K, B)
        if len(self.groups) == 1:
            inputs, obs, _ = self.groups[0]
            x, y = inputs[idx], obs[idx][:, :, 1:]
        else:
            k = idx.shape[0]
            x = self.inputs[0].new_empty((k, self.batch_size, *self.inputs[0].shape[1:]))
            y = self.obs[0].new_empty((k, self.batch_size, self.obs[0].shape[1] - 1))
            for inputs, obs, members in self.groups:
                x[members] = inputs[idx[members]]
                y[members] = obs[idx[members]][:, :, 1:]
        return condition(x, self.time_conds, self.cond_groups, self.time_gens, self.apply_time_cond), y


def time_cond_groups(time_conds: list[str], device: torch.device) -> list[tuple[str, torch.Tensor]]:
    modes: dict[str, list[int]] = {}
    for k, mode in enumerate(time_conds):
        modes.setdefault(mode, []).append(k)
    return [(mode, torch.tensor(m, device=device)) for mode, m in modes.items()]


def condition(
    x: torch.Tensor,
    time_conds: list[str],
    groups: list[tuple[str, torch.Tensor]],
    gens: list[torch.Generator],
    apply_time_cond: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """Apply each member's time conditioning to x (K, B, T, I); random_time per member with
    that member's own generator (a fresh permutation per sequence per call)."""
    if len(groups) == 1 and groups[0][0] != "random_time":
        return apply_time_cond(x, groups[0][0])
    x = x.clone()
    for mode, members in groups:
        if mode != "random_time":
            x[members] = apply_time_cond(x[members], mode)
            continue
        for k in members.tolist():
            x[k] = apply_time_cond(x[k], mode, generator=gens[k])
    return x


# ---------------------------------------------------------------- the loop


@dataclass
class TrainOutcome:
    params: Params
    final_loss: torch.Tensor  # (K,) mean loss over the last LOSS_WINDOW steps
    diverged_at: torch.Tensor  # (K,) int64: step of the first non-finite loss/grad, -1 if none


def all_finite(loss: torch.Tensor, grads: Params) -> torch.Tensor:
    """(K,) True where the member's loss and every gradient entry are finite."""
    ok = torch.isfinite(loss)
    for g in grads.values():
        ok = ok & torch.isfinite(g).reshape(g.shape[0], -1).all(dim=1)
    return ok


def train(
    kind: str,
    params: Params,
    batches: Batches,
    lr: torch.Tensor,
    steps: int,
    trainable: tuple[str, ...],
    progress: Callable[[int, int], None] | None = None,
) -> TrainOutcome:
    """Train all members for `steps` steps. A member whose loss or gradients turn
    non-finite stops updating from that step on (its row is flagged invalid later)."""
    k = lr.shape[0]
    device = lr.device
    step_fn = pick_loss_and_grads(kind, device, trainable)
    state = adam_init(params, trainable, lr)
    active = torch.ones(k, dtype=torch.bool, device=device)
    diverged_at = torch.full((k,), -1, dtype=torch.int64, device=device)
    window = max(1, min(LOSS_WINDOW, steps))
    recent = torch.zeros(window, k, dtype=torch.float64, device=device)  # ring buffer of losses
    every = max(1, steps // 100)
    if steps == 0:  # untrained: report the initial loss on one batch of the member's stream
        x, y = batches.next()
        with torch.no_grad():
            recent[0] = member_loss(kind, params, x, y).double()
    for step in range(steps):
        x, y = batches.next()
        loss, grads = step_fn(kind, params, x, y, trainable)
        ok = all_finite(loss, grads)
        diverged_at = torch.where(active & ~ok, step, diverged_at)
        active = active & ok
        params = adam_step(params, grads, state, active)
        recent[step % window] = loss.double()
        if progress is not None and ((step + 1) % every == 0 or step + 1 == steps):
            progress(step + 1, steps)
    return TrainOutcome(params=params, final_loss=recent.mean(dim=0), diverged_at=diverged_at)


def scramble_core(params: Params, seeds: list[int]) -> Params:
    """scramble_core mode: permute the entries of every >= 2-D core weight (w_ih, w_hh) of
    each member with a generator derived from that member's seed; biases and head untouched."""
    out = dict(params)
    for name in CORE_KEYS:
        w = params[name]
        if w.dim() < 3:  # (K, ...) : biases are 1-D per member
            continue
        flat = w.flatten(1)  # (K, n)
        perms = torch.stack(
            [torch.randperm(flat.shape[1], generator=member_generator(s, f"scramble:{name}")) for s in seeds]
        ).to(w.device)
        out[name] = flat.gather(1, perms).view_as(w)
    return out
