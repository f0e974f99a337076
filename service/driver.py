"""The Ray Tune driver: run an experiment spec's trials on Ray and store every seed's row.

This is the only module that imports `ray`. The flow:

    spec -> service.sweep.expand_trials (grid, packed, minus seed-runs already stored)
         -> tune.Tuner(with_resources(_trainable), param_space={"plan": grid_search(plans)})
         -> each trial: trainers.run_packed(members) -> rows + driver columns -> ResultStore

* Ray is configured explicitly: `RAY_USAGE_STATS_ENABLED=0`; an already initialised Ray is
  reused; else `ray_address` / `$RAY_ADDRESS` joins a cluster; else a local Ray is started
  (`num_cpus` = all cores unless given, no dashboard).
* Resume: seed-runs whose (config_id, seed) is already in the store are not trained again.
* Failures: a packed trial whose run raises is retried configuration by configuration, so
  one bad configuration gets invalid rows and its pack-mates still run. If nothing in the
  trial can run, it raises; Tune retries it (`FailureConfig(max_failures=MAX_FAILURES)`),
  and when it still fails the driver stores invalid rows (valid=False, invalid_reason = the
  error) for its seeds. Nothing is dropped silently.
* Search: Ray Tune's `OptunaSearch` with a seeded TPE sampler; one trial per sample trains
  every grid configuration x every seed with the sampled values; the trial's objective is
  the mean (or a 95% t-interval bound) of `search.metric` over the sample's valid rows;
  rows record `search_sample`. A resumed search feeds completed samples back to Optuna.
* Tune's own experiment state goes to `<store root>/_tune/<experiment>/` on the store's
  filesystem (local folder or s3://), so a cluster needs no node-local paths.
* Progress: a Tune callback in the driver process calls `progress(Progress)`; trials send a
  heartbeat (an intermediate `tune.report` with `heartbeat`, `fraction`, `steps_done`,
  `steps_total`, `members`) at most every HEARTBEAT_SECONDS while they train, so the ETA and
  `Progress.train_fraction` move within a trial. The final report (`done_rows`,
  `invalid_rows`, and in a search `objective`) is the only one without `heartbeat`. `should_stop()` is
  polled four times a second by a Tune stopper; on True running trials are stopped and
  what was stored stays stored (re-running resumes).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Tune's CSV / JSON / TensorBoard loggers would write files per trial nobody reads.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# The new console output engine prints a configuration panel even at verbose=0.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from service.spec import SEARCHABLE, ExperimentSpec, config_id, load_spec  # noqa: E402
from service.store import ResultStore, check_name  # noqa: E402
from service.sweep import Member, TrialPlan, expand_trials, grid_members  # noqa: E402
from trainers.config import RESULT_COLUMNS  # noqa: E402
from worlds.errors import ClusterError, StoreError  # noqa: E402

MAX_FAILURES = 1  # Tune retries of a trial that raised (crash, lost node, CUDA error, ...)
HEARTBEAT_SECONDS = 2.0  # at most one in-trial progress report per trial this often
STOP_POLL_SECONDS = 0.25

__all__ = ["Progress", "RunSummary", "run_experiment", "init_ray", "MAX_FAILURES"]


@dataclass(frozen=True)
class Progress:
    seed_runs_total: int
    seed_runs_done: int  # stored with a valid result (includes those stored before this run)
    seed_runs_failed: int  # stored as invalid (training raised or diverged); done + failed = finished
    eta_seconds: float | None  # None until the first trial of this run reports
    elapsed_seconds: float = 0.0
    # seed-runs in trials that are training now (have sent a heartbeat), and the fraction of
    # their training done (weighted by seed-runs); None when no trial is reporting
    seed_runs_training: int = 0
    train_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunSummary:
    experiment_id: str
    spec_hash: str
    seed_runs_total: int
    seed_runs_done: int  # valid rows stored (as in Progress)
    seed_runs_failed: int  # invalid rows stored
    seed_runs_skipped: int  # already in the store when the run started
    seed_runs_trained: int  # trained (or recorded as failed) by this run
    trials: int
    trials_failed: int
    cancelled: bool
    elapsed_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- Ray setup -------------------------------------------------------------------------------


def init_ray(ray_address: str | None = None, num_cpus: int | None = None) -> None:
    """Reuse an initialised Ray; else join `ray_address` / $RAY_ADDRESS; else start a local one."""
    import ray

    if ray.is_initialized():
        return
    address = ray_address or os.environ.get("RAY_ADDRESS")
    # ray.init annotates logging_level as int, but its own default is the str "info".
    try:
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)  # type: ignore[arg-type]
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     logging_level="ERROR", log_to_driver=False)  # type: ignore[arg-type]
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise ClusterError(f"cannot start or join {where}: {e}") from None


def _check_cluster(spec: ExperimentSpec, store: ResultStore) -> None:
    import ray

    check_cluster_fit(spec, store, ray.nodes(), autoscaler_node_types=_autoscaler_node_types(),
                      shared_fs=os.environ.get("WORLDSWEEP_SHARED_FS") == "1")


def _autoscaler_node_types() -> list[dict[str, float]]:
    """Resources of each node type the cluster's autoscaler may still add (KubeRay worker
    groups, cluster-launcher node types), so that a GPU group scaled to zero counts as GPUs.

    $WORLDSWEEP_AUTOSCALER_NODE_TYPES (a JSON list of resource dicts, e.g.
    `[{"CPU": 8, "GPU": 1}]`, set by the deploy/ manifests) declares them; otherwise the
    cluster config an autoscaler may publish in the GCS is read (the private accessor Ray
    Train and Ray Data use); [] when neither exists."""
    declared = os.environ.get("WORLDSWEEP_AUTOSCALER_NODE_TYPES")
    if declared:
        try:
            types = json.loads(declared)
            if not isinstance(types, list) or not all(isinstance(t, dict) for t in types):
                raise ValueError("not a list of objects")
            return [{str(k): float(v) for k, v in t.items()} for t in types]
        except ValueError as e:
            raise ClusterError("WORLDSWEEP_AUTOSCALER_NODE_TYPES must be a JSON list of resource "
                               f'objects like [{{"CPU": 8, "GPU": 1}}]: {e}') from None
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - private API: no autoscaler information is not an error
        return []
    if config is None:
        return []
    return [{k: float(v) for k, v in group.resources.items()}
            for group in config.node_group_configs if group.max_count != 0]


def check_cluster_fit(
    spec: ExperimentSpec,
    store: ResultStore,
    nodes: list[dict[str, Any]],
    *,
    autoscaler_node_types: list[dict[str, float]] | None = None,
    shared_fs: bool = False,
) -> None:
    """Refuse, before anything is scheduled, a spec the cluster can never run or a store the
    trials cannot share. Pure: `nodes` is `ray.nodes()`, `autoscaler_node_types` the resources
    of node types an autoscaler can add.

    * GPUs: `gpus_per_trial > 0` needs a GPU on some node (now, or a node type the autoscaler
      can add), and no more GPUs than one node has (fractions share one GPU).
    * CPUs: `cpus_per_trial` must fit on one node.
    * Store: a node-local path is refused when the trials may run on other machines: alive
      nodes with different IP addresses, or an autoscaler that adds nodes. Several nodes on
      one machine (one IP: `ray start` twice, as in the tests) share its disk, so a local
      path is allowed there; `shared_fs` (WORLDSWEEP_SHARED_FS=1) declares a path mounted on
      every node (NFS) shared.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    shapes = alive + list(autoscaler_node_types or [])
    res = spec.resources
    if res.gpus_per_trial > 0:
        if not any(r.get("GPU", 0) > 0 for r in shapes):
            raise ClusterError(f"the spec asks for resources.gpus_per_trial={res.gpus_per_trial:g} but the "
                               "Ray cluster has no GPUs; set gpus_per_trial: 0 or join a cluster with GPU workers")
        most = max(r.get("GPU", 0) for r in shapes)
        if res.gpus_per_trial > most:
            raise ClusterError(f"resources.gpus_per_trial={res.gpus_per_trial:g} is more than any node has "
                               f"({most:g} GPUs); use at most {most:g}, or a fraction to share a GPU")
    most_cpus = max((r.get("CPU", 0) for r in shapes), default=0)
    if res.cpus_per_trial > most_cpus:
        raise ClusterError(f"resources.cpus_per_trial={res.cpus_per_trial:g} is more than any node has ({most_cpus:g})")
    hosts = {n.get("NodeManagerAddress") for n in nodes if n.get("Alive")}
    if store.is_local and not shared_fs and (len(hosts) > 1 or autoscaler_node_types):
        where = (f"spans {len(hosts)} machines" if len(hosts) > 1
                 else "has an autoscaler that adds machines")
        raise StoreError(
            f"the result store {store.uri!r} is a node-local path but the Ray cluster {where}; "
            "use an s3:// (or other shared) store URI, or set WORLDSWEEP_SHARED_FS=1 if that path "
            "is a filesystem shared by every node")


# ---- the trainable (runs in a Ray worker) ----------------------------------------------------


def _invalid_rows(members: list[Member], reason: str) -> list[dict[str, Any]]:
    """Rows for seed-runs that could not be trained: every setting recorded, metrics NaN."""
    import worlds

    rows = []
    for config, seed in members:
        row: dict[str, Any] = {}
        for name, kind in RESULT_COLUMNS.items():
            row[name] = {"float": math.nan, "str": "", "int": None, "bool": False, "list<float>": None}[kind]
        try:
            wspec = worlds.spec(config.world)
            row.update(world_role=wspec.role, world_family=wspec.family,
                       seq_len=int(wspec.resolve(config.world_params)["T"]))
        except Exception:  # noqa: BLE001 - the failure may be exactly this lookup
            pass
        row.update(
            world=config.world, world_params=config.world_params_json(), model=config.model,
            hidden_dim=config.hidden_dim, mode=config.mode, time_cond=config.time_cond, lr=config.lr,
            batch_size=config.batch_size, steps=config.steps, n_train=config.n_train,
            n_eval=config.n_eval, seed=seed,
            data_seed=seed if config.data_seed == "per_seed" else int(config.data_seed),
            baseline_kind=config.baseline, valid=False, invalid_reason=reason[:2000],
            worldsweep_version=_version(),
        )
        rows.append(row)
    return rows


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("worldsweep")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0+unknown"


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _run_plan(plan: TrialPlan, progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """trainers.run_packed on the plan; on failure isolate the configuration(s) that fail."""
    import trainers

    members = list(plan.members)
    try:
        return trainers.run_packed(members, progress=progress)
    except Exception as packed_error:
        by_config: dict[str, list[Member]] = {}
        for c, s in members:
            by_config.setdefault(config_id(c), []).append((c, s))
        if len(by_config) == 1:
            raise
        by_key: dict[tuple[str, int], dict[str, Any]] = {}
        failures = 0
        for cid, group in by_config.items():
            try:
                rows = trainers.run_packed(group)
            except Exception as e:  # noqa: BLE001 - recorded in the rows
                failures += 1
                rows = _invalid_rows(group, _error_text(e))
            by_key.update({(cid, s): row for (_c, s), row in zip(group, rows, strict=True)})
        if failures == len(by_config):
            raise packed_error
        return [by_key[(config_id(c), s)] for c, s in members]


def _objective(values: list[float], how: str) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan
    mean = sum(vals) / len(vals)
    if how == "mean":
        return mean
    if len(vals) < 2:
        return math.nan
    from scipy import stats as sps

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = float(sps.t.ppf(0.975, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return mean - half if how == "ci_low" else mean + half


def _trainable(config: dict[str, Any]) -> None:
    try:
        _train(config)
    except Exception as e:
        # Re-raised as a plain RuntimeError carrying "Type: message": Ray ships the exception
        # to the driver by pickling, and exception classes with their own __init__ signature
        # (SpecError(field, message)) do not survive that round trip.
        # The original traceback travels as text; the last line stays the error itself.
        import traceback

        raise RuntimeError(f"{traceback.format_exc()}\n{_error_text(e)}") from None


def _train(config: dict[str, Any]) -> None:
    import ray
    import torch
    from ray import tune

    ctx = config["ctx"]
    store = ResultStore.from_config(ctx["store"])
    cpus = ctx.get("cpus_per_trial", 1)
    torch.set_num_threads(max(1, int(round(cpus))))
    sample = int(config.get("search_sample", -1))
    extra = dict(
        experiment=ctx["experiment"], spec_hash=ctx["spec_hash"],
        trial_id=tune.get_context().get_trial_id() or "", search_sample=sample,
        node_id=ray.get_runtime_context().get_node_id(), hostname=socket.gethostname(),
    )
    searching = "plan" not in config
    if searching:
        spec = load_spec(ctx["spec"])
        overrides = _sample_overrides(spec, config)
        done = store.done_keys(ctx["experiment"])
        plans = expand_trials(spec, overrides=overrides, done=done)
        sample_keys = {(config_id(c), s) for c, s in grid_members(spec, overrides)}
    else:
        plans = [TrialPlan.from_dict(config["plan"])]
        sample_keys = set()

    total = sum(len(p.members) for p in plans)
    finished = 0
    last_beat = [time.monotonic()]
    every = float(ctx.get("heartbeat_seconds", HEARTBEAT_SECONDS))

    def heartbeat(step: int, steps: int) -> None:
        # An intermediate result: the driver's callback turns it into Progress. In a search
        # it carries objective=NaN (Tune requires the metric in every result) and the
        # searcher ignores it (_IndexedOptunaSearch.on_trial_result).
        now = time.monotonic()
        if now - last_beat[0] < every or steps <= 0 or step >= steps:
            return
        last_beat[0] = now
        frac = (finished + len(plan.members) * min(1.0, step / steps)) / max(total, 1)
        beat: dict[str, Any] = {"heartbeat": 1, "fraction": frac, "steps_done": int(step),
                                "steps_total": int(steps), "members": total}
        if searching:
            beat["objective"] = math.nan
        tune.report(beat)

    n_rows = n_invalid = 0
    for plan in plans:
        rows = _run_plan(plan, heartbeat)
        if len(rows) != len(plan.members):
            raise RuntimeError(f"trainer returned {len(rows)} rows for {len(plan.members)} seed-runs")
        for row, (c, _s) in zip(rows, plan.members, strict=True):
            row.update(extra, config_id=config_id(c))
        store.write_rows(ctx["experiment"], plan.chunk_id, rows)
        finished += len(plan.members)
        n_rows += len(rows)
        n_invalid += sum(not r.get("valid", False) for r in rows)

    result: dict[str, Any] = {"done_rows": n_rows, "invalid_rows": n_invalid, "fraction": 1.0}
    if searching:
        metric = spec.search.metric  # type: ignore[union-attr]
        df = store.read(ctx["experiment"], filters={"valid": True})
        df = df[[(cid, s) in sample_keys for cid, s in zip(df["config_id"], df["seed"], strict=True)]]
        result["objective"] = _objective(df[metric].tolist(), spec.search.objective)  # type: ignore[union-attr]
    tune.report(result)


def _sample_overrides(spec: ExperimentSpec, config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in spec.search.space:  # type: ignore[union-attr]
        v = config[name]
        out[name] = int(round(v)) if SEARCHABLE[name][0] == "int" else float(v)
    return out


# ---- the driver (runs where run_experiment is called) ----------------------------------------


def run_experiment(
    spec: ExperimentSpec | dict[str, Any] | str,
    experiment_id: str,
    store: ResultStore,
    *,
    ray_address: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    num_cpus: int | None = None,
) -> RunSummary:
    """Run (or resume) an experiment on Ray Tune; every seed-run ends up as a row in `store`."""
    from ray import tune

    spec = load_spec(spec)
    check_name("experiment", experiment_id)
    started = time.monotonic()
    store.check_writable()
    store.remove_stale_temp(experiment_id)  # left by writers killed mid-write; write_rows does it too
    init_ray(ray_address, num_cpus)
    _check_cluster(spec, store)
    spec_hash = spec.content_hash()
    done = store.done_keys(experiment_id)
    total = spec.n_seed_runs
    ctx = {"experiment": experiment_id, "spec_hash": spec_hash, "store": store.to_config(),
           "cpus_per_trial": spec.resources.cpus_per_trial, "heartbeat_seconds": HEARTBEAT_SECONDS}

    tracker = _Tracker(total, progress, started)
    search_alg = None
    if spec.search is None:
        keys = {(config_id(c), s) for c, s in grid_members(spec)}
        skipped = len(keys & done)
        tracker.start(skipped, _count_invalid(store, experiment_id, keys) if skipped else 0)
        plans = expand_trials(spec, done=done)
        param_space: dict[str, Any] = {"ctx": ctx, "plan": tune.grid_search([p.to_dict() for p in plans])}
        tracker.members = {p.chunk_id: list(p.members) for p in plans}
        num_samples = 1
        n_trials = len(plans)
    else:
        search_alg, num_samples, skipped = _searcher(spec, store, experiment_id, tracker)
        ctx["spec"] = spec.canonical()
        param_space = {"ctx": ctx, **_tune_space(spec)}
        n_trials = num_samples
    if n_trials == 0:
        tracker.emit()
        return tracker.summary(experiment_id, spec_hash, skipped, 0, 0, False)

    storage_path, storage_fs = store.tune_storage()
    stopper = _tune_object(_CancelLogic, tune.Stopper, should_stop)
    tuner = tune.Tuner(
        tune.with_resources(_trainable, {"cpu": spec.resources.cpus_per_trial,
                                         "gpu": spec.resources.gpus_per_trial}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=num_samples, search_alg=search_alg, reuse_actors=True,
            max_concurrent_trials=spec.search.max_concurrent if spec.search else None,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            metric="objective" if spec.search else None,
            mode=spec.search.mode if spec.search else None,
        ),
        run_config=tune.RunConfig(
            name=f"{experiment_id}/{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            storage_path=storage_path,
            storage_filesystem=None if store.is_local else storage_fs,
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            stop=stopper,
            callbacks=[_tune_object(_ProgressLogic, tune.Callback, tracker, store, experiment_id, spec, ctx)],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    trials_failed = 0
    for result in grid:  # type: ignore[attr-defined]  # ResultGrid iterates via __getitem__/__len__
        if result.error is not None:
            trials_failed += 1
            # Safety net: the callback normally stored these already (same chunk id: no duplicates).
            _store_failure(store, experiment_id, spec, ctx, result.config, str(result.error), tracker=None)
    if spec.search is None:
        # The store is the truth: a trial stopped by a cancel may have stored its rows after
        # the last progress event.
        tracker.finished = len(keys & store.done_keys(experiment_id))
        tracker.failed = _count_invalid(store, experiment_id, keys)
        tracker.emit()
    return tracker.summary(experiment_id, spec_hash, skipped, n_trials, trials_failed, stopper.cancelled)


def _count_invalid(store: ResultStore, experiment_id: str, keys: set[tuple[str, int]]) -> int:
    df = store.read(experiment_id, filters={"valid": False})
    return sum((c, s) in keys for c, s in zip(df["config_id"], df["seed"], strict=True))


def _members_of(spec: ExperimentSpec, config: dict[str, Any]) -> tuple[str, list[Member], int]:
    if "plan" in config:
        plan = TrialPlan.from_dict(config["plan"])
        return plan.chunk_id, list(plan.members), -1
    sample = int(config.get("search_sample", -1))
    members = grid_members(spec, _sample_overrides(spec, config))
    from service.sweep import chunk_id_of

    return chunk_id_of(members), members, sample


def _store_failure(store: ResultStore, experiment_id: str, spec: ExperimentSpec, ctx: dict[str, Any],
                   config: dict[str, Any], error: str, tracker: _Tracker | None) -> int:
    """Invalid rows for a trial that failed after its retries (skipping seed-runs stored meanwhile)."""
    chunk, members, sample = _members_of(spec, config)
    done = store.done_keys(experiment_id)
    members = [(c, s) for c, s in members if (config_id(c), s) not in done]
    if not members:
        return 0
    error = error.strip().splitlines()[-1] if error.strip() else "trial failed"
    rows = _invalid_rows(members, f"trial failed after {MAX_FAILURES + 1} attempts: {error}")
    for row, (c, _s) in zip(rows, members, strict=True):
        row.update(experiment=experiment_id, spec_hash=ctx["spec_hash"], config_id=config_id(c),
                   trial_id="", search_sample=sample, node_id="", hostname=socket.gethostname())
    store.write_rows(experiment_id, f"failed-{chunk}", rows)
    return len(rows)


class _Tracker:
    """Counts seed-runs for Progress and the summary (driver side)."""

    def __init__(self, total: int, progress: Callable[[Progress], None] | None, started: float) -> None:
        self.total, self.callback, self.started = total, progress, started
        self.skipped = self.finished = self.failed = 0
        self.running: dict[str, tuple[float, int]] = {}  # trial id -> (fraction, members)
        self.members: dict[str, list[Member]] = {}
        self.first_done_at: float | None = None
        self.run_started = time.monotonic()

    def start(self, skipped: int, skipped_invalid: int) -> None:
        self.skipped = skipped
        self.finished = skipped
        self.failed = skipped_invalid
        self.run_started = time.monotonic()

    def emit(self) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        running = sum(f * n for f, n in self.running.values())
        training = sum(n for _f, n in self.running.values())
        trained = self.finished - self.skipped + running
        remaining = self.total - self.finished - running
        eta = None
        if trained > 0:
            eta = max(0.0, remaining * (now - self.run_started) / trained)
        if self.finished >= self.total:
            eta = 0.0
        self.callback(Progress(self.total, self.finished - self.failed, self.failed, eta, now - self.started,
                               seed_runs_training=training,
                               train_fraction=running / training if training else None))

    def summary(self, experiment_id: str, spec_hash: str, skipped: int, trials: int, trials_failed: int,
                cancelled: bool) -> RunSummary:
        return RunSummary(
            experiment_id=experiment_id, spec_hash=spec_hash, seed_runs_total=self.total,
            seed_runs_done=self.finished - self.failed, seed_runs_failed=self.failed,
            seed_runs_skipped=skipped, seed_runs_trained=self.finished - self.skipped,
            trials=trials, trials_failed=trials_failed, cancelled=cancelled,
            elapsed_seconds=time.monotonic() - self.started,
        )


class _ProgressLogic:
    """Driver-side progress: a tune.Callback once mixed with it (`_tune_object`)."""

    def __init__(self, tracker: _Tracker, store: ResultStore, experiment_id: str,
                 spec: ExperimentSpec, ctx: dict[str, Any]) -> None:
        self.tracker, self.store, self.experiment_id, self.spec, self.ctx = tracker, store, experiment_id, spec, ctx
        self.per_trial = spec.n_configs * len(spec.seed_list()) if spec.search else 0
        self.finished: set[str] = set()

    def _size(self, trial: Any) -> int:
        if "plan" in trial.config:
            return len(trial.config["plan"]["members"])
        return self.per_trial

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # heartbeats only: the final result (done_rows) is counted in on_trial_complete
        if "fraction" in result and "done_rows" not in result:
            size = int(result.get("members") or self._size(trial))
            self.tracker.running[trial.trial_id] = (min(1.0, float(result["fraction"])), size)
            self.tracker.emit()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.running.pop(trial.trial_id, None)
        result = trial.last_result or {}
        if "done_rows" in result and trial.trial_id not in self.finished:
            self.finished.add(trial.trial_id)
            self.tracker.finished += int(result["done_rows"])
            self.tracker.failed += int(result.get("invalid_rows", 0))
        self.tracker.emit()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.running.pop(trial.trial_id, None)
        if trial.trial_id in self.finished:
            return
        self.finished.add(trial.trial_id)
        error = _trial_error_text(trial)
        n = _store_failure(self.store, self.experiment_id, self.spec, self.ctx, trial.config, error, self.tracker)
        self.tracker.finished += n
        self.tracker.failed += n
        self.tracker.emit()


def _trial_error_text(trial: Any) -> str:
    """The last line of the trial's error (the exception message), from Tune's error file."""
    for attr in ("error_msg", "get_error"):
        try:
            value = getattr(trial, attr)
            value = value() if callable(value) else value
            if value:
                return str(value)
        except Exception:  # noqa: BLE001 - best effort across Tune versions
            continue
    path = getattr(trial, "error_file", None) or getattr(getattr(trial, "run_metadata", None), "error_filename", None)
    if path and os.path.exists(str(path)):
        return open(str(path)).read()
    return "trial failed (no error message recorded)"


class _CancelLogic:
    """A tune.Stopper once mixed with it (`_tune_object`). Polls should_stop() at most once
    per STOP_POLL_SECONDS (Tune asks on every step of its loop)."""

    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        self.should_stop = should_stop
        self.cancelled = False
        self._last = 0.0

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.cancelled:
            return True
        now = time.monotonic()
        if self.should_stop is not None and now - self._last >= STOP_POLL_SECONDS:
            self._last = now
            self.cancelled = bool(self.should_stop())
        return self.cancelled


def _tune_space(spec: ExperimentSpec) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for name, d in spec.search.space.items():  # type: ignore[union-attr]
        if d.kind == "log_uniform":
            out[name] = tune.loguniform(*d.log_uniform)  # type: ignore[misc]
        elif d.kind == "uniform":
            out[name] = tune.uniform(*d.uniform)  # type: ignore[misc]
        elif d.kind == "int_uniform":
            lo, hi = d.int_uniform  # type: ignore[misc]
            out[name] = tune.randint(lo, hi + 1)  # randint's upper bound is exclusive
        else:
            out[name] = tune.choice(list(d.choice))  # type: ignore[arg-type]
    return out


def _searcher(spec: ExperimentSpec, store: ResultStore, experiment_id: str, tracker: _Tracker):
    """OptunaSearch with a seeded TPE sampler, warm-started with completed samples on resume."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = spec.search
    assert search is not None  # noqa: S101
    per_sample = spec.n_configs * len(spec.seed_list())
    df = store.read(experiment_id)
    df = df[df["search_sample"] >= 0]
    points, rewards, complete, stored_rows, stored_invalid = [], [], 0, 0, 0
    next_index = int(df["search_sample"].max()) + 1 if len(df) else 0
    for _sample, rows in df.groupby("search_sample"):
        if len(rows) < per_sample:
            continue  # incomplete: its rows stay; the sample is not counted
        first = rows.iloc[0]
        point = {name: (int(first[name]) if SEARCHABLE[name][0] == "int" else float(first[name]))
                 for name in search.space}
        reward = _objective(rows.loc[rows["valid"], search.metric].tolist(), search.objective)
        if math.isfinite(reward):
            points.append(point)
            rewards.append(reward)
        complete += 1
        stored_rows += len(rows)
        stored_invalid += int((~rows["valid"]).sum())
    tracker.start(stored_rows, stored_invalid)

    class _IndexedOptunaSearch(OptunaSearch):
        """Tags each suggested configuration with its sample index (stored as search_sample)."""

        def __init__(self, *args: Any, first_index: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._next_index = first_index

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if "heartbeat" in result:
                return  # in-trial progress, not an objective value
            super().on_trial_result(trial_id, result)

        def suggest(self, trial_id: str):
            config = super().suggest(trial_id)
            if isinstance(config, dict):
                config = {**config, "search_sample": self._next_index}
                self._next_index += 1
            return config

    alg = _IndexedOptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=search.sampler_seed),
        points_to_evaluate=points or None, evaluated_rewards=rewards or None,
        first_index=next_index,
    )
    return alg, max(0, search.num_samples - complete), stored_rows


def _tune_object(logic: type, base: type, *args: Any) -> Any:
    """An instance of `logic` that is also a `base` (tune.Callback / tune.Stopper).

    Ray is imported only when a run starts, not when this module is imported: Ray reads its
    auth settings (RAY_AUTH_MODE / RAY_AUTH_TOKEN) at import time, and a caller may set them
    after importing us."""
    return type(logic.__name__, (logic, base), {})(*args)
