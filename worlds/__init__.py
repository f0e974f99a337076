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

import importlib
from typing import Any

# Attributes resolve lazily (PEP 562) so that `import worlds.errors` — which stats/ and the
# service's validation use — does not pull in torch (about 3 s) through worlds.data.
_SOURCES = {
    "Split": "worlds.data",
    "WorldData": "worlds.data",
    "WorldMeta": "worlds.data",
    "make": "worlds.data",
    "SpecError": "worlds.errors",
    "UnknownParameter": "worlds.errors",
    "UnknownWorld": "worlds.errors",
    "Param": "worlds.params",
    "FAMILIES": "worlds.registry",
    "ROLES": "worlds.registry",
    "WORLDS": "worlds.registry",
    "WorldSpec": "worlds.registry",
    "register": "worlds.registry",
    "resolve": "worlds.registry",
    "spec": "worlds.registry",
    "world_ids": "worlds.registry",
    "TIME_CONDS": "worlds.timecond",
    "apply_time_cond": "worlds.timecond",
    "time_values": "worlds.timecond",
}


def __getattr__(name: str) -> Any:
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'worlds' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_SOURCES))


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
