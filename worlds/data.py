"""`make`: a world's train and eval tensors and metadata from its id, a seed and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from worlds.errors import SpecError
from worlds.params import check_count
from worlds.registry import spec
from worlds.timecond import time_values

ZSCORE_EPS = 1e-6  # SCIENCE.md: (y - mu) / (sigma + 1e-6)


@dataclass(frozen=True)
class Split:
    inputs: torch.Tensor  # (N, T, 2) float32: [observation feature, t/(T-1)]
    obs: torch.Tensor  # (N, T) float32 raw observations; the target at step t is obs[:, t+1]
    latent: torch.Tensor | None  # (N, T) float32 probe target; None for null worlds

    def __len__(self) -> int:
        return self.obs.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(
            self.inputs.to(device),
            self.obs.to(device),
            None if self.latent is None else self.latent.to(device),
        )


@dataclass(frozen=True)
class WorldMeta:
    world_id: str
    role: str  # structured | null | null_iid | decoy
    family: str  # E1_drift | E2_regime | E3_osc
    seq_len: int
    params: dict[str, float | int]  # fully resolved (defaults + overrides)
    norm: dict[str, float] = field(default_factory=dict)  # E3: {"mu", "sigma"}; else {}
    binary: bool = False  # observations are 0/1 (E2)
    seed: int = 0
    n_train: int = 0
    n_eval: int = 0


@dataclass(frozen=True)
class WorldData:
    train: Split
    eval: Split
    meta: WorldMeta


def make(
    world_id: str, *, seed: int, n_train: int = 20000, n_eval: int = 2000, **overrides: Any
) -> WorldData:
    """Generate a registered world (see `worlds.registry` for ids and parameter names).

    Same arguments, same bits. Train and eval are independent draws of the same seed. CPU
    float32 tensors; move them with `Split.to`.
    """
    world = spec(world_id)
    params = world.resolve(overrides)
    seed = check_count("seed", seed, minimum=0)
    n_train = check_count("n_train", n_train)
    n_eval = check_count("n_eval", n_eval)

    raw = world.generate(params, n_train, n_eval, seed)
    for name, arr in (("train", raw.train_obs), ("eval", raw.eval_obs)):
        if not np.isfinite(arr).all():
            raise SpecError(
                "world_params",
                f"world {world_id!r} with {params} produced non-finite {name} observations "
                "(a diverging integration? try a smaller dt)",
            )

    norm: dict[str, float] = {}
    if world.feature == "zscore":
        norm = {"mu": float(raw.norm_obs.mean()), "sigma": float(raw.norm_obs.std())}
    T = int(params["T"])
    tvals = time_values(T)  # (T,)

    def split(obs: np.ndarray, latent: np.ndarray | None) -> Split:
        if world.feature == "offset":
            feat = obs - obs[:, :1]
        elif world.feature == "zscore":
            feat = (obs - norm["mu"]) / (norm["sigma"] + ZSCORE_EPS)
        else:
            feat = obs
        inputs = np.empty((*obs.shape, 2), dtype=np.float32)  # (N, T, 2)
        inputs[..., 0] = feat
        inputs[..., 1] = tvals
        return Split(
            torch.from_numpy(inputs),
            torch.from_numpy(obs.astype(np.float32)),
            None if latent is None else torch.from_numpy(latent.astype(np.float32)),
        )

    meta = WorldMeta(
        world_id=world.id,
        role=world.role,
        family=world.family,
        seq_len=T,
        params=params,
        norm=norm,
        binary=world.binary,
        seed=seed,
        n_train=n_train,
        n_eval=n_eval,
    )
    return WorldData(
        train=split(raw.train_obs, raw.train_latent),
        eval=split(raw.eval_obs, raw.eval_latent),
        meta=meta,
    )
