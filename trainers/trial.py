"""run_trial / run_packed: data -> training -> evaluation -> dynamics -> result rows.

A "member" is one (TrialConfig, seed) pair. Members whose configurations share a
`pack_key` train together in one vectorised batch; everything else (world, world params,
data seed, lr, time conditioning, baseline) may differ per member.

Recorded-setting decisions:
  * train_seconds is the wall time of the vectorised training loop that trained the row
    (shared by the K members trained together, not divided by K).
  * final_train_loss is the member's mean training loss over the last 100 steps (fewer if
    fewer were run); for 0 steps (mode untrained) the initial network's loss on one batch.
  * steps records the configured value; mode `untrained` always trains 0 steps.
  * the rows' `world_params` is the JSON of the configured overrides (sorted keys).
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import torch

from trainers.cells import init_params
from trainers.config import RESULT_COLUMNS, TrialConfig
from trainers.evaluation import EvalMember, baseline, evaluate
from trainers.training import Batches, member_generator, scramble_core, train, trainable_keys
from worlds.errors import SpecError

Progress = Callable[[int, int], None]
ANALYSIS_SETTINGS = (
    "probe", "probe_ridge", "lyapunov", "lyap_sequences", "lyap_warmup", "lyap_steps",
    "coasting", "coast_sequences", "coast_cut", "coast_len", "halluc_cut", "halluc_len",
)
DYNAMICS_KEYS = tuple(RESULT_COLUMNS)[list(RESULT_COLUMNS).index("lyap_spectrum") :]  # issue 3 columns


def worldsweep_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("worldsweep")
    except PackageNotFoundError:
        return "0+unknown"


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available else cpu; "cpu"; "cuda" / "cuda:N" must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise SpecError("device", f"must be auto, cpu, cuda or cuda:N, got {name!r}") from e
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise SpecError("device", f"must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise SpecError("device", f"{name!r} requested but no CUDA device is available here")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise SpecError("device", f"{name!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    return device


def as_config(config: TrialConfig | dict[str, Any]) -> TrialConfig:
    return config if isinstance(config, TrialConfig) else TrialConfig.from_dict(dict(config))


@lru_cache(maxsize=1024)
def _seq_len(world: str, params_json: str) -> int:
    from worlds import spec

    return int(spec(world).resolve(json.loads(params_json))["T"])  # validates the overrides


def pack_key(config: TrialConfig | dict[str, Any]) -> tuple:
    """Configurations with equal keys can train in one vectorised batch (run_packed).

    Training shape (model, hidden_dim, T, batch_size, steps, mode), the evaluation set size,
    the device string and every analysis setting; worlds, data seeds, lr, time
    conditioning and baseline may differ.
    """
    c = as_config(config)
    steps = 0 if c.mode == "untrained" else c.steps
    analysis = (
        c.probe, c.probe_ridge, c.lyapunov, c.lyap_sequences, c.lyap_warmup, c.lyap_steps,
        c.coasting, c.coast_cut, c.coast_len, c.halluc_cut, c.halluc_len,
    )  # fmt: skip
    return (
        c.model, c.hidden_dim, _seq_len(c.world, c.world_params_json()), c.batch_size, steps,
        c.mode, c.n_eval, c.device, *analysis,
    )  # fmt: skip


def run_trial(
    config: TrialConfig | dict[str, Any], seeds: Sequence[int], *, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Train and evaluate one configuration for every seed; one row per seed, in order."""
    c = as_config(config)
    return run_packed([(c, s) for s in seeds], progress=progress)


def _check_seed(i: int, seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise SpecError(f"seeds[{i}]", f"must be an integer >= 0, got {seed!r}")
    return int(seed)


def _data_seed(c: TrialConfig, seed: int) -> int:
    return seed if c.data_seed == "per_seed" else int(c.data_seed)


def _load_data(configs: list[TrialConfig], seeds: list[int], device: torch.device) -> list[Any]:
    """Each member's WorldData on `device`; members with equal data share one object."""
    from worlds import WorldData, make

    cache: dict[tuple, WorldData] = {}
    out = []
    for c, s in zip(configs, seeds, strict=True):
        key = (c.world, c.world_params_json(), _data_seed(c, s), c.n_train, c.n_eval)
        if key not in cache:
            d = make(c.world, seed=key[2], n_train=c.n_train, n_eval=c.n_eval, **c.world_params)
            cache[key] = WorldData(d.train.to(device), d.eval.to(device), d.meta)
        out.append(cache[key])
    return out


def run_packed(
    members: Sequence[tuple[TrialConfig | dict[str, Any], int]], *, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Train several members in ONE vectorised batch; rows in member order.

    SpecError (`members`) if their pack_keys differ.
    """
    if not members:
        return []
    configs = [as_config(c) for c, _ in members]
    seeds = [_check_seed(i, s) for i, (_, s) in enumerate(members)]
    keys = [pack_key(c) for c in configs]
    for i, key in enumerate(keys):
        if key != keys[0]:
            raise SpecError(f"members[{i}]", f"cannot be packed with members[0]: pack keys {key} != {keys[0]}")
    c0 = configs[0]
    device = resolve_device(c0.device)
    data = _load_data(configs, seeds, device)
    baselines = _baselines(configs, data)
    kind, mode = c0.model, c0.mode
    steps = 0 if mode == "untrained" else c0.steps

    initial = init_params(kind, c0.hidden_dim, data[0].train.inputs.shape[-1], seeds, device)
    batches = Batches(
        [d.train.inputs for d in data], [d.train.obs for d in data], seeds,
        [c.time_cond for c in configs], c0.batch_size,
    )  # fmt: skip
    lr = torch.tensor([c.lr for c in configs], dtype=torch.float32, device=device)
    start = time.perf_counter()
    outcome = train(kind, dict(initial), batches, lr, steps, trainable_keys(mode), progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    params = scramble_core(outcome.params, seeds) if mode == "scramble_core" else outcome.params

    eval_members = [
        EvalMember(s, d.eval.inputs, d.eval.obs, d.eval.latent, c.time_cond, c.baseline == "markov")
        for c, s, d in zip(configs, seeds, data, strict=True)
    ]
    core_changed = mode in ("full", "scramble_core") and steps > 0
    metrics = evaluate(
        kind, params, eval_members, probe=c0.probe, ridge=c0.probe_ridge,
        untrained=initial if core_changed else None,
    )  # fmt: skip
    dynamics = _dynamics(kind, params, eval_members, data, c0)

    version = worldsweep_version()
    rows = []
    for k, (c, s, d) in enumerate(zip(configs, seeds, data, strict=True)):
        row = _settings_columns(c, s, d.meta)
        b = baselines[k]
        row.update(baseline_kind=b.kind, baseline_choice=b.choice, **metrics[k])
        row.update(nll_baseline=b.nll, delta_nll=b.nll - row["nll_model"])
        row.update(
            final_train_loss=float(outcome.final_loss[k]),
            train_seconds=seconds,
            device=str(device),
            worldsweep_version=version,
        )
        row.update(dynamics[k])
        row["valid"], row["invalid_reason"] = _validity(row, int(outcome.diverged_at[k]), _latent_varies(d), c)
        rows.append({name: row[name] for name in RESULT_COLUMNS})
    return rows


def _latent_varies(d: Any) -> bool:
    lat = d.eval.latent
    return lat is not None and bool((lat != lat.flatten()[0]).any())


def _baselines(configs: list[TrialConfig], data: list[Any]) -> list[Any]:
    cache: dict[tuple, Any] = {}
    out = []
    for c, d in zip(configs, data, strict=True):
        key = (id(d), c.baseline)
        if key not in cache:
            cache[key] = baseline(c.baseline, d.train.obs, d.eval.obs, d.meta.binary)
        out.append(cache[key])
    return out


def _settings_columns(c: TrialConfig, seed: int, meta: Any) -> dict[str, Any]:
    return {
        "world": c.world,
        "world_role": meta.role,
        "world_family": meta.family,
        "world_params": c.world_params_json(),
        "seq_len": int(meta.seq_len),
        "model": c.model,
        "hidden_dim": int(c.hidden_dim),
        "mode": c.mode,
        "time_cond": c.time_cond,
        "lr": float(c.lr),
        "batch_size": int(c.batch_size),
        "steps": int(c.steps),
        "n_train": int(c.n_train),
        "n_eval": int(c.n_eval),
        "seed": seed,
        "data_seed": _data_seed(c, seed),
        **{name: getattr(c, name) for name in ANALYSIS_SETTINGS},
    }


def empty_dynamics() -> dict[str, Any]:
    return {
        name: [] if RESULT_COLUMNS[name].startswith("list") else "" if RESULT_COLUMNS[name] == "str" else math.nan
        for name in DYNAMICS_KEYS
    }


def _dynamics(kind: str, params: dict, members: list[EvalMember], data: list[Any], c: TrialConfig) -> list[dict]:
    """Dynamics columns per member (trainers.dynamics); NaN / "" when switched off."""
    if not (c.lyapunov or c.coasting):
        return [empty_dynamics() for _ in members]
    try:
        dyn = importlib.import_module("trainers.dynamics")
    except ModuleNotFoundError as e:  # engineer D's module not there yet: columns stay empty
        if e.name != "trainers.dynamics":
            raise
        return [empty_dynamics() for _ in members]
    from worlds import apply_time_cond

    n = max(c.lyap_sequences, c.coast_sequences)
    full = torch.stack([m.inputs[:n] for m in members])  # (K, n, T, I)
    full = apply_time_cond(full, "full_time")
    cond = torch.stack(
        [
            apply_time_cond(m.inputs[:n], m.time_cond, generator=member_generator(m.seed, "dynamics_time"))
            for m in members
        ]
    )
    roles = [d.meta.role for d in data]
    with torch.no_grad():
        return dyn.dynamics_columns(kind, params, full, cond, roles, c, coast_sequences=c.coast_sequences)


def _validity(
    row: dict[str, Any], diverged_at: int, has_latent_variance: bool, c: TrialConfig
) -> tuple[bool, str]:
    """SCIENCE.md §3: invalid when training diverged or any metric is NaN / infinite.

    Expected NaNs do not invalidate: probe columns of worlds without a latent (or with the
    probe switched off), and dynamics columns that are switched off or not applicable.
    """
    if diverged_at >= 0:
        return False, f"diverged: non-finite loss or gradient at step {diverged_at}"
    checked = ["nll_model", "nll_baseline", "delta_nll", "final_train_loss"]
    if c.probe and has_latent_variance:
        checked += ["probe_r2", "probe_r2_untrained", "probe_r2_shuffled", "probe_r2_noise", "probe_margin"]
    if c.lyapunov and row.get("lyap_spectrum"):
        checked += ["lyap_1", "lyap_sum"]
    for name in checked:
        v = row[name]
        if not math.isfinite(v):
            return False, f"non-finite {name} ({v})"
    return True, ""
