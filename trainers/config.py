"""The configuration of one trial (one network configuration, many seeds) and the result
columns it produces. Defaults are SCIENCE.md's; every field is recorded in the result row."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worlds.errors import SpecError, UnknownParameter

MODES = ("full", "readout_only", "scramble_core", "untrained")
TIME_CONDS = ("full_time", "no_time", "constant_time", "random_time")
BASELINES = ("smart", "batch", "persistence", "mean", "markov")
MODELS = ("rnn_tanh", "gru", "lstm")


@dataclass(frozen=True)
class TrialConfig:
    world: str = "E3_osc_struct"
    world_params: dict[str, Any] = field(default_factory=dict)  # overrides of the world's defaults
    model: str = "gru"
    hidden_dim: int = 16
    mode: str = "full"
    time_cond: str = "full_time"
    lr: float = 1e-3
    batch_size: int = 64
    steps: int = 20000
    n_train: int = 20000
    n_eval: int = 2000
    data_seed: int | str = 0  # an int, or "per_seed" (each model seed gets data_seed = seed)
    baseline: str = "smart"  # smart (whole eval set) | batch (reference) | persistence | mean | markov
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # analysis switches and their SCIENCE.md defaults
    probe: bool = True
    probe_ridge: float = 1e-3
    lyapunov: bool = True
    lyap_sequences: int = 16
    lyap_warmup: int = 50
    lyap_steps: int = 150
    coasting: bool = True
    coast_sequences: int = 1  # SCIENCE.md: "an evaluation sequence"; more are averaged
    coast_cut: int = 100
    coast_len: int = 50
    halluc_cut: int = 50
    halluc_len: int = 50

    def __post_init__(self) -> None:
        def bad(name: str, msg: str) -> None:
            raise SpecError(name, msg)

        if self.model not in MODELS:
            bad("model", f"unknown model {self.model!r}; valid: {list(MODELS)}")
        if self.mode not in MODES:
            bad("mode", f"unknown mode {self.mode!r}; valid: {list(MODES)}")
        if self.time_cond not in TIME_CONDS:
            bad("time_cond", f"unknown time conditioning {self.time_cond!r}; valid: {list(TIME_CONDS)}")
        if self.baseline not in BASELINES:
            bad("baseline", f"unknown baseline {self.baseline!r}; valid: {list(BASELINES)}")
        for name in ("hidden_dim", "batch_size", "n_train", "n_eval", "lyap_sequences", "coast_len", "coast_sequences"):
            if int(getattr(self, name)) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            bad("steps", f"must be >= 0, got {self.steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad("lr", f"must be a finite number > 0, got {self.lr}")
        if not (self.probe_ridge >= 0 and math.isfinite(self.probe_ridge)):
            bad("probe_ridge", f"must be a finite number >= 0, got {self.probe_ridge}")
        if not isinstance(self.world_params, Mapping):
            bad("world_params", f"must be a mapping of parameter overrides, got {self.world_params!r}")
        if isinstance(self.data_seed, str) and self.data_seed != "per_seed":
            bad("data_seed", f"must be an integer or 'per_seed', got {self.data_seed!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UnknownParameter(unknown[0], f"unknown trial config key; valid: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def world_params_json(self) -> str:
        return json.dumps(dict(self.world_params), sort_keys=True)


# Result columns: name -> type ("str", "int", "float", "bool", "list<float>").
# The store (service/store.py) turns this into its Arrow schema; names are a public contract.
RESULT_COLUMNS: dict[str, str] = {
    "world": "str",
    "world_role": "str",  # structured | null | null_iid | decoy
    "world_family": "str",  # E1_drift | E2_regime | E3_osc: pairs a structured world with its nulls
    "world_params": "str",  # JSON of the overrides (all other parameters are the registry defaults)
    "seq_len": "int",
    "model": "str",
    "hidden_dim": "int",
    "mode": "str",
    "time_cond": "str",
    "lr": "float",
    "batch_size": "int",
    "steps": "int",
    "n_train": "int",
    "n_eval": "int",
    "seed": "int",
    "data_seed": "int",
    "baseline_kind": "str",  # the configured baseline: smart | batch | persistence | mean | markov
    "baseline_choice": "str",  # what `smart` picked: persistence | mean (| mixed for batch)
    "nll_model": "float",
    "nll_baseline": "float",
    "delta_nll": "float",
    "probe_r2": "float",
    "probe_r2_untrained": "float",
    "probe_r2_shuffled": "float",
    "probe_r2_noise": "float",
    "probe_margin": "float",
    "final_train_loss": "float",
    "valid": "bool",
    "invalid_reason": "str",
    "train_seconds": "float",
    "device": "str",
    "worldsweep_version": "str",
    # analysis settings (SCIENCE.md: no setting may be implicit)
    "probe": "bool",
    "probe_ridge": "float",
    "lyapunov": "bool",
    "lyap_sequences": "int",
    "lyap_warmup": "int",
    "lyap_steps": "int",
    "coasting": "bool",
    "coast_sequences": "int",
    "coast_cut": "int",
    "coast_len": "int",
    "halluc_cut": "int",
    "halluc_len": "int",
    # dynamics (issue 3)
    "lyap_spectrum": "list<float>",
    "lyap_1": "float",
    "lyap_gap": "float",
    "lyap_sum": "float",
    "lyap_ky_dim": "float",
    "lyap_label": "str",
    "coast_retention": "float",
    "coast_autocorr": "float",
    "coast_mean_abs": "float",
    "coast_decay": "float",
    "coast_label": "str",
    "halluc_var": "float",
    "halluc_mean_abs": "float",
    "halluc_label": "str",
}
