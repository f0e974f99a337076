"""Synthetic worlds (SCIENCE.md §1): a registry of seeded, vectorised generators.

    data = worlds.make("E3_osc_struct", seed=0, n_train=20000, n_eval=2000, omega=1.5)
    data.train.inputs   # (N, T, 2) float32: [observation feature, t/(T-1)]
    data.train.obs      # (N, T) raw observations (targets: obs[:, 1:])
    data.train.latent   # (N, T) probe target, None for null worlds
    data.meta           # world_id, role, family, seq_len, params, norm, binary
    x = worlds.apply_time_cond(data.train.inputs, "random_time", torch.Generator().manual_seed(1))

World ids and their parameters: `worlds.world_ids()`, `worlds.spec(id).defaults`, and the
docstring of `worlds.registry`. `worlds.resolve(id, overrides)` validates without generating.
"""

from worlds.data import Split, WorldData, WorldMeta, make
from worlds.errors import SpecError, UnknownParameter, UnknownWorld
from worlds.params import Param
from worlds.registry import FAMILIES, ROLES, WORLDS, WorldSpec, register, resolve, spec, world_ids
from worlds.timecond import TIME_CONDS, apply_time_cond, time_values

__all__ = [
    "FAMILIES",
    "ROLES",
    "TIME_CONDS",
    "WORLDS",
    "Param",
    "SpecError",
    "Split",
    "UnknownParameter",
    "UnknownWorld",
    "WorldData",
    "WorldMeta",
    "WorldSpec",
    "apply_time_cond",
    "make",
    "register",
    "resolve",
    "spec",
    "time_values",
    "world_ids",
]
