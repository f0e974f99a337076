"""Turn a validated spec into trials: grid configurations x seed chunks, packed (pure).

A trial trains a list of *members*, (TrialConfig, seed) pairs, in one vectorised batch
(`trainers.run_packed`). Packing rules:

1. Each configuration's seeds are cut into chunks of `resources.seeds_per_trial` (a unit).
2. Units whose configurations have the same `trainers.pack_key` (same model, hidden size,
   sequence length, batch, steps, mode, ... : the cell's tensor shapes agree) are combined,
   in grid order, into one trial while the trial holds at most `resources.member_cap`
   members (`members_per_trial`; default max(seeds_per_trial, 32) on CPU, 256 on GPU). Typical packs: a world and
   its null twin, or several learning rates. Bigger vectorised batches of independent
   networks are the main speed lever; the cap keeps one trial from serialising a sweep that
   could use many workers, and bounds the memory of one trial.
3. A trial's `chunk_id` is a hash of its member set, so the same members always map to the
   same store file (a re-run replaces it) and a different member set never overwrites it.

A seed's result does not depend on what it was packed with (trainers' contract), so
packing is free to change between runs (e.g. on resume, when done members are dropped).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.spec import ExperimentSpec, config_id
from trainers.config import TrialConfig

Member = tuple[TrialConfig, int]


@dataclass(frozen=True)
class TrialPlan:
    """One Ray Tune trial: members trained together, stored as one chunk file."""

    chunk_id: str
    members: tuple[Member, ...]

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(config_id, seed) of every member: the seed-run identities within an experiment."""
        return [(config_id(c), s) for c, s in self.members]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what travels in the Tune param_space)."""
        return {"chunk_id": self.chunk_id,
                "members": [{"config": c.to_dict(), "seed": s} for c, s in self.members]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialPlan:
        return cls(chunk_id=d["chunk_id"],
                   members=tuple((TrialConfig.from_dict(m["config"]), int(m["seed"])) for m in d["members"]))


def chunk_id_of(members: Iterable[Member]) -> str:
    keys = [[config_id(c), s] for c, s in members]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def _pack_key(config: TrialConfig) -> tuple:
    import trainers

    return tuple(trainers.pack_key(config))


def pack(members: list[Member], *, seeds_per_trial: int, member_cap: int) -> list[TrialPlan]:
    """Pack members (in order) into trials per the module rules."""
    unit_size = max(1, min(seeds_per_trial, member_cap))
    by_config: dict[str, list[Member]] = {}
    for c, s in members:
        by_config.setdefault(config_id(c), []).append((c, s))
    groups: dict[tuple, list[tuple[str, list[Member]]]] = {}
    for cid, ms in by_config.items():
        key = _pack_key(ms[0][0])
        groups.setdefault(key, []).extend((cid, ms[i:i + unit_size]) for i in range(0, len(ms), unit_size))
    plans: list[TrialPlan] = []
    for units in groups.values():
        # First fit: a unit joins the first open trial with room that does not yet hold a
        # chunk of the same configuration (seeds_per_trial bounds seeds per configuration).
        open_trials: list[tuple[set[str], list[Member]]] = []
        for cid, unit in units:
            target = next((t for t in open_trials
                           if cid not in t[0] and len(t[1]) + len(unit) <= member_cap), None)
            if target is None:
                target = (set(), [])
                open_trials.append(target)
            target[0].add(cid)
            target[1].extend(unit)
        plans += [TrialPlan(chunk_id_of(ms), tuple(ms)) for _, ms in open_trials]
    return plans


def grid_members(spec: ExperimentSpec, overrides: Mapping[str, Any] | None = None) -> list[Member]:
    """Every (configuration, seed) of the grid, configurations in spec order."""
    seeds = spec.seed_list()
    return [(c, s) for c in spec.configs(overrides) for s in seeds]


def expand_trials(spec: ExperimentSpec, *, done: set[tuple[str, int]] | frozenset = frozenset(),
                  overrides: Mapping[str, Any] | None = None) -> list[TrialPlan]:
    """The trials of the spec's grid (with `overrides`, e.g. one Optuna sample's values),
    leaving out seed-runs in `done` ((config_id, seed) already stored)."""
    members = [(c, s) for c, s in grid_members(spec, overrides) if (config_id(c), s) not in done]
    r = spec.resources
    return pack(members, seeds_per_trial=r.seeds_per_trial, member_cap=r.member_cap)
