"""Time conditioning: what the model sees in input channel 1 (SCIENCE.md §1)."""

from __future__ import annotations

import numpy as np
import torch

from worlds.errors import SpecError

TIME_CONDS = ("full_time", "no_time", "constant_time", "random_time")


def time_values(T: int) -> np.ndarray:
    """t/(T-1) for t = 0..T-1 as float32, computed in float64 so numpy and torch agree bitwise."""
    if T < 2:
        raise SpecError("T", f"must be an integer >= 2, got {T}")
    return (np.arange(T, dtype=np.float64) / (T - 1)).astype(np.float32)


def apply_time_cond(
    inputs: torch.Tensor, mode: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A new tensor equal to `inputs` (..., T, 2) with channel 1 set by `mode`:

    full_time      t/(T-1)
    no_time        0
    constant_time  0.5
    random_time    the values t/(T-1) in a fresh uniform random order per sequence (and per
                   call), drawn from `generator`, which is required: no global RNG.
    """
    if mode not in TIME_CONDS:
        raise SpecError("time_cond", f"unknown time conditioning {mode!r}; valid: {list(TIME_CONDS)}")
    if inputs.ndim < 2 or inputs.shape[-1] != 2:
        raise SpecError("inputs", f"must have shape (..., T, 2), got {tuple(inputs.shape)}")
    T = inputs.shape[-2]
    out = inputs.clone()
    if mode == "no_time":
        out[..., 1] = 0.0
    elif mode == "constant_time":
        out[..., 1] = 0.5
    else:
        values = torch.from_numpy(time_values(T)).to(device=inputs.device, dtype=inputs.dtype)  # (T,)
        if mode == "full_time":
            out[..., 1] = values
        else:
            if generator is None:
                raise SpecError("generator", "random_time needs an explicit torch.Generator")
            # argsort of iid uniform keys: an independent uniform permutation per sequence,
            # all sequences at once. Keys are drawn on the generator's device, so a CPU
            # generator gives the same permutations whatever device `inputs` live on.
            keys = torch.rand(inputs.shape[:-1], generator=generator, device=generator.device)
            order = keys.argsort(dim=-1).to(inputs.device)  # (..., T)
            out[..., 1] = values[order]
    return out
