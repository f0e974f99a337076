"""The experiment spec: one pydantic model, validated once at the door.

A spec names sweep axes (lists, crossed into a grid), the training / data / analysis
settings, the seeds, optional Optuna search and the Ray resources:

    name: e3-capacity
    worlds: [E3_osc_struct, {id: E3_osc_null, params: {omega: 1.2}}]
    models: [gru, rnn_tanh]
    hidden_dims: [2, 4, 8, 16, 32]
    modes: [full]                 # full | readout_only | scramble_core | untrained
    time_cond: [full_time]        # full_time | no_time | constant_time | random_time
    train: {steps: 20000, batch_size: 64, lr: 0.001}     # each may be a list (an axis)
    data: {n_train: 20000, n_eval: 2000, data_seed: 0, baseline: smart}
    seeds: {count: 20, start: 1234}                       # or an explicit list
    analysis: {probe: true, lyapunov: true, coasting: true}
    search: {metric: delta_nll, mode: max, num_samples: 16,
             space: {lr: {log_uniform: [1.0e-4, 1.0e-2]}}}
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, seeds_per_trial: 20}

Every default is SCIENCE.md's (the `trainers.config.TrialConfig` defaults). Unknown keys
and out-of-range values raise `SpecError` naming the field path, e.g.
"`hidden_dims[2]`: must be between 1 and 256, got 0". Inside, the spec becomes plain
`TrialConfig`s (`ExperimentSpec.configs()`); `service.sweep` turns those into trials.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trainers.config import BASELINES, MODELS, MODES, RESULT_COLUMNS, TIME_CONDS, TrialConfig
from worlds.errors import LimitExceeded, SpecError, UnknownWorld

__all__ = [
    "ExperimentSpec",
    "SEARCHABLE",
    "config_id",
    "load_spec",
]

# Hard sanity bounds of the format itself. Server limits (issue 5) are stricter and are
# applied with `ExperimentSpec.check_limits`.
MAX_HIDDEN = 256
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536
MAX_N = 10_000_000
MAX_SEED = 2**31 - 1
MAX_SEEDS = 100_000
MAX_SAMPLES = 100_000


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _between(lo: float, hi: float):
    def check(v: float) -> float:
        if not (lo <= v <= hi):
            raise ValueError(f"must be between {_fmt(lo)} and {_fmt(hi)}, got {v!r}")
        return v

    return AfterValidator(check)


def _positive_finite(v: float) -> float:
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"must be a finite number > 0, got {v!r}")
    return v


Hidden = Annotated[int, _between(1, MAX_HIDDEN)]
Steps = Annotated[int, _between(0, MAX_STEPS)]
Batch = Annotated[int, _between(1, MAX_BATCH)]
Count = Annotated[int, _between(1, MAX_N)]
Seed = Annotated[int, _between(0, MAX_SEED)]
LearningRate = Annotated[float, AfterValidator(_positive_finite), _between(0, 10)]
Model = Literal["rnn_tanh", "gru", "lstm"]
Mode = Literal["full", "readout_only", "scramble_core", "untrained"]
TimeCond = Literal["full_time", "no_time", "constant_time", "random_time"]
Baseline = Literal["smart", "batch", "persistence", "mean", "markov"]
assert set(get_args(Model)) == set(MODELS) and set(get_args(Mode)) == set(MODES)  # noqa: S101
assert set(get_args(TimeCond)) == set(TIME_CONDS) and set(get_args(Baseline)) == set(BASELINES)  # noqa: S101

_DEFAULT = TrialConfig()


def _as_list(v: Any) -> Any:
    """Axes may be written as a scalar (one value) or a list."""
    return v if isinstance(v, list | tuple) else [v]


def _nonempty_unique(v: list) -> list:
    if not v:
        raise ValueError("must list at least one value")
    plain = [x.model_dump() if isinstance(x, BaseModel) else x for x in v]
    seen = [json.dumps(x, sort_keys=True, default=str) for x in plain]
    dup = next((x for i, x in enumerate(plain) if seen[i] in seen[:i]), None)
    if dup is not None:
        raise ValueError(f"lists {dup!r} twice")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldRef(_Model):
    """A world id with optional parameter overrides (`worlds.spec(id).defaults`)."""

    id: str
    params: dict[str, float | int] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_id(cls, v: Any) -> Any:
        return {"id": v} if isinstance(v, str) else v


class Train(_Model):
    steps: Annotated[list[Steps], AfterValidator(_nonempty_unique)] = [_DEFAULT.steps]
    batch_size: Annotated[list[Batch], AfterValidator(_nonempty_unique)] = [_DEFAULT.batch_size]
    lr: Annotated[list[LearningRate], AfterValidator(_nonempty_unique)] = [_DEFAULT.lr]

    _lists = field_validator("steps", "batch_size", "lr", mode="before")(_as_list)


class Data(_Model):
    n_train: Count = _DEFAULT.n_train
    n_eval: Count = _DEFAULT.n_eval
    data_seed: int | str = _DEFAULT.data_seed  # an integer, or "per_seed"
    baseline: Baseline = _DEFAULT.baseline  # type: ignore[assignment]

    @field_validator("data_seed", mode="before")
    @classmethod
    def _data_seed(cls, v: Any) -> int | str:
        if v == "per_seed":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
            raise ValueError(f"must be an integer between 0 and {MAX_SEED} or 'per_seed', got {v!r}")
        return v


class Seeds(_Model):
    """`{count, start}` (seeds start, start+1, ...) or an explicit list (stored as `values`)."""

    count: Annotated[int, _between(1, MAX_SEEDS)] | None = None
    start: Seed = 1234
    values: Annotated[list[Seed], AfterValidator(_nonempty_unique)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, v: Any) -> Any:
        return {"values": v} if isinstance(v, list | tuple) else v

    @model_validator(mode="after")
    def _one_form(self) -> Seeds:
        if self.values is None and self.count is None:
            raise ValueError("give `count` (with optional `start`) or an explicit list of seeds")
        if self.values is not None and self.count is not None:
            raise ValueError("give either `count`/`start` or an explicit list, not both")
        if self.count is not None and self.start + self.count - 1 > MAX_SEED:
            raise ValueError(f"seeds would exceed {MAX_SEED}")
        return self

    def as_list(self) -> list[int]:
        if self.values is not None:
            return list(self.values)
        return list(range(self.start, self.start + int(self.count or 0)))


class Analysis(_Model):
    probe: bool = _DEFAULT.probe
    probe_ridge: Annotated[float, _between(0, 1e6)] = _DEFAULT.probe_ridge
    lyapunov: bool = _DEFAULT.lyapunov
    lyap_sequences: Annotated[int, _between(1, 100_000)] = _DEFAULT.lyap_sequences
    lyap_warmup: Annotated[int, _between(0, 1_000_000)] = _DEFAULT.lyap_warmup
    lyap_steps: Annotated[int, _between(1, 1_000_000)] = _DEFAULT.lyap_steps
    coasting: bool = _DEFAULT.coasting
    coast_sequences: Annotated[int, _between(1, 100_000)] = _DEFAULT.coast_sequences
    coast_cut: Annotated[int, _between(1, 1_000_000)] = _DEFAULT.coast_cut
    coast_len: Annotated[int, _between(1, 1_000_000)] = _DEFAULT.coast_len
    halluc_cut: Annotated[int, _between(1, 1_000_000)] = _DEFAULT.halluc_cut
    halluc_len: Annotated[int, _between(1, 1_000_000)] = _DEFAULT.halluc_len


# Trial settings Optuna may search over, with the bounds their values must respect.
SEARCHABLE: dict[str, tuple[str, float, float]] = {
    "lr": ("float", 1e-12, 10.0),
    "hidden_dim": ("int", 1, MAX_HIDDEN),
    "batch_size": ("int", 1, MAX_BATCH),
    "steps": ("int", 0, MAX_STEPS),
    "n_train": ("int", 1, MAX_N),
    "probe_ridge": ("float", 0.0, 1e6),
}
# Grid axes of the spec that a searched setting replaces (the axis must then be a single value).
_AXIS_OF = {"lr": "train.lr", "steps": "train.steps", "batch_size": "train.batch_size",
            "hidden_dim": "hidden_dims", "n_train": "data.n_train"}


class Distribution(_Model):
    """Exactly one of: log_uniform [lo, hi], uniform [lo, hi], int_uniform [lo, hi] (inclusive),
    choice [v, ...]."""

    log_uniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_uniform: tuple[int, int] | None = None
    choice: list[float | int] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in ("log_uniform", "uniform", "int_uniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of log_uniform, uniform, int_uniform, choice"
                + (f"; got {given}" if given else "")
            )
        kind = given[0]
        value = getattr(self, kind)
        if kind == "choice":
            _nonempty_unique(value)
        else:
            lo, hi = value
            if not lo < hi:
                raise ValueError(f"`{kind}` needs low < high, got [{lo}, {hi}]")
            if kind == "log_uniform" and lo <= 0:
                raise ValueError(f"`log_uniform` needs low > 0, got {lo}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("log_uniform", "uniform", "int_uniform", "choice") if getattr(self, k) is not None)

    def values_range(self) -> tuple[float, float]:
        v = getattr(self, self.kind)
        return (min(v), max(v))


class Search(_Model):
    """Optuna search (Ray Tune `OptunaSearch`, seeded TPE sampler). Each sample trains every
    grid configuration x every seed with the sampled values; its objective is the mean (or
    the 95% t-interval bound) over all those seed rows of `metric`."""

    metric: str = "delta_nll"
    mode: Literal["max", "min"] = "max"
    objective: Literal["mean", "ci_low", "ci_high"] = "mean"
    num_samples: Annotated[int, _between(1, MAX_SAMPLES)] = 16
    space: dict[str, Distribution]
    sampler_seed: Seed = 0
    max_concurrent: Annotated[int, _between(1, 100_000)] | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        numeric = [k for k, t in RESULT_COLUMNS.items() if t == "float"]
        if v not in numeric:
            raise ValueError(f"unknown metric {v!r}; valid: {numeric}")
        return v

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Distribution]) -> dict[str, Distribution]:
        if not v:
            raise ValueError("must name at least one setting to search")
        for name, dist in v.items():
            if name not in SEARCHABLE:
                raise SpecError(name, f"cannot be searched; searchable: {sorted(SEARCHABLE)}")
            kind, lo, hi = SEARCHABLE[name]
            vlo, vhi = dist.values_range()
            if not (lo <= vlo and vhi <= hi):
                raise SpecError(name, f"values must lie between {lo:g} and {hi:g}, got [{vlo:g}, {vhi:g}]")
            if kind == "int" and dist.kind in ("uniform", "log_uniform"):
                raise SpecError(name, f"is an integer: use int_uniform or choice, not {dist.kind}")
            if kind == "int" and dist.kind == "choice" and any(float(c) != int(c) for c in dist.choice or []):
                raise SpecError(name, "is an integer: choices must be integers")
        return v


class Resources(_Model):
    """Ray resources of one trial. `members_per_trial` caps how many (configuration, seed)
    networks one trial trains in a single vectorised batch when it packs configurations.

    Default cap: max(seeds_per_trial, 32) on CPU, where per-step cost grows about linearly
    with the batch of networks once it holds a few dozen, so bigger packs would only cost
    parallelism; max(seeds_per_trial, 256) with GPUs, where a larger vectorised batch is
    nearly free until the device is full."""

    cpus_per_trial: Annotated[float, _between(0.01, 1024)] = 1.0
    gpus_per_trial: Annotated[float, _between(0, 64)] = 0.0
    seeds_per_trial: Annotated[int, _between(1, MAX_SEEDS)] = 20
    members_per_trial: Annotated[int, _between(1, 10 * MAX_SEEDS)] | None = None

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"must be a fraction <= 1 or a whole number of GPUs, got {v}")
        return v

    @property
    def member_cap(self) -> int:
        if self.members_per_trial:
            return self.members_per_trial
        return max(self.seeds_per_trial, 256 if self.gpus_per_trial > 0 else 32)


class ExperimentSpec(_Model):
    name: Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    description: str = ""
    worlds: Annotated[list[WorldRef], AfterValidator(_nonempty_unique)]
    models: Annotated[list[Model], AfterValidator(_nonempty_unique)] = [cast(Model, _DEFAULT.model)]
    hidden_dims: Annotated[list[Hidden], AfterValidator(_nonempty_unique)] = [_DEFAULT.hidden_dim]
    modes: Annotated[list[Mode], AfterValidator(_nonempty_unique)] = [cast(Mode, _DEFAULT.mode)]
    time_cond: Annotated[list[TimeCond], AfterValidator(_nonempty_unique)] = [cast(TimeCond, _DEFAULT.time_cond)]
    train: Train = Train()
    data: Data = Data()
    seeds: Seeds = Seeds(count=20)
    analysis: Analysis = Analysis()
    search: Search | None = None
    resources: Resources = Resources()
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")] = _DEFAULT.device

    _lists = field_validator("worlds", "models", "hidden_dims", "modes", "time_cond", mode="before")(_as_list)

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentSpec:
        import worlds as worlds_pkg

        known = worlds_pkg.world_ids()
        for i, ref in enumerate(self.worlds):
            if ref.id not in known:
                raise UnknownWorld(f"worlds[{i}]", f"unknown world {ref.id!r}; valid: {known}")
            try:
                worlds_pkg.spec(ref.id).resolve(ref.params)
            except SpecError as e:
                raise type(e)(f"worlds[{i}].params.{e.field}", e.message) from None
        if self.search is not None:
            for name in self.search.space:
                axis = _AXIS_OF.get(name)
                if axis and len(self._axis(axis)) > 1:
                    raise SpecError(f"search.space.{name}", f"is searched, so `{axis}` must be a single value")
        if self.resources.gpus_per_trial > 0 and self.device == "cpu":
            raise SpecError("device", "is 'cpu' but resources.gpus_per_trial > 0")
        return self

    def _axis(self, dotted: str) -> list:
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj

    # ---- identity -------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The validated spec with every default filled in, as plain JSON data."""
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of every setting that can change a result.

        `resources` only schedules work (packing never changes a seed's result), so it is left
        out: re-running with other resources resumes the same experiment.
        """
        d = self.canonical()
        d.pop("resources")
        return hashlib.sha256(_canonical_json(d).encode()).hexdigest()

    def experiment_id(self) -> str:
        """Deterministic id used by `worldsweep run` (re-running the same spec resumes)."""
        return f"{self.name}-{self.content_hash()[:10]}"

    # ---- expansion ------------------------------------------------------------------------
    def seed_list(self) -> list[int]:
        return self.seeds.as_list()

    def configs(self, overrides: Mapping[str, Any] | None = None) -> list[TrialConfig]:
        """The grid of trial configurations (axes crossed in spec order); `overrides` replace
        settings (an Optuna sample's values)."""
        o = dict(overrides or {})
        a = self.analysis
        out = []
        for ref, model, hidden, mode, tc, steps, batch, lr in itertools.product(
            self.worlds, self.models, self.hidden_dims, self.modes, self.time_cond,
            self.train.steps, self.train.batch_size, self.train.lr,
        ):
            fields: dict[str, Any] = dict(
                world=ref.id, world_params=dict(ref.params), model=model, hidden_dim=hidden,
                mode=mode, time_cond=tc, lr=lr, batch_size=batch, steps=steps,
                n_train=self.data.n_train, n_eval=self.data.n_eval, data_seed=self.data.data_seed,
                baseline=self.data.baseline, device=self.device,
                **a.model_dump(),
            )
            fields.update(o)
            out.append(TrialConfig(**fields))
        return out

    @property
    def n_configs(self) -> int:
        t = self.train
        return (len(self.worlds) * len(self.models) * len(self.hidden_dims) * len(self.modes)
                * len(self.time_cond) * len(t.steps) * len(t.batch_size) * len(t.lr))

    @property
    def n_seed_runs(self) -> int:
        """Seed-runs the experiment trains (grid configurations x seeds, x samples when searching)."""
        n = self.n_configs * len(self.seed_list())
        return n * (self.search.num_samples if self.search else 1)

    @property
    def n_trials(self) -> int:
        """Ray Tune trials: packed trial chunks of the grid, or one per Optuna sample."""
        if self.search is not None:
            return self.search.num_samples
        from service.sweep import expand_trials

        return len(expand_trials(self))

    # ---- server limits (issue 5) -----------------------------------------------------------
    def maxima(self) -> dict[str, tuple[str, int]]:
        """The largest value of each limited quantity and the field that sets it:
        {"seed_runs", "steps", "seq_len", "n_train"} -> (field path, value)."""
        import worlds as worlds_pkg

        steps = max(self.train.steps)
        n_train = self.data.n_train
        steps_field, n_train_field = "train.steps", "data.n_train"
        if self.search is not None:
            for name, dist in self.search.space.items():
                # a searched setting replaces its grid axis
                if name == "steps":
                    steps, steps_field = int(dist.values_range()[1]), "search.space.steps"
                if name == "n_train":
                    n_train, n_train_field = int(dist.values_range()[1]), "search.space.n_train"
        seq = [(f"worlds[{i}].params.T", int(worlds_pkg.spec(r.id).resolve(r.params)["T"]))
               for i, r in enumerate(self.worlds)]
        seq_field, seq_len = max(seq, key=lambda x: x[1])
        return {
            "seed_runs": ("seeds", self.n_seed_runs),
            "steps": (steps_field, steps),
            "seq_len": (seq_field, seq_len),
            "n_train": (n_train_field, n_train),
        }

    def check_limits(self, limits: Mapping[str, int | None]) -> None:
        """Raise LimitExceeded naming the field when a quantity exceeds its limit (None = no limit)."""
        for key, (field_path, value) in self.maxima().items():
            limit = limits.get(key)
            if limit is not None and value > limit:
                what = "seed-runs (configurations x seeds)" if key == "seed_runs" else key
                raise LimitExceeded(field_path, f"{what} is {value}, above the server limit of {limit}")


def _canonical_json(d: Any) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)


def config_id(config: TrialConfig) -> str:
    """Short stable id of one trial configuration (sha256 of its canonical dict, 12 hex)."""
    return hashlib.sha256(_canonical_json(config.to_dict()).encode()).hexdigest()[:12]


# ---- loading and error translation ---------------------------------------------------------


def load_spec(source: ExperimentSpec | Mapping[str, Any] | str | bytes | Path,
              content_type: str | None = None) -> ExperimentSpec:
    """Validate a spec given as a model, a dict, a file path, or YAML / JSON text.

    `content_type` ("application/json", "application/yaml", ...) picks the parser for text;
    without it JSON is tried for text starting with "{", YAML otherwise (YAML is a JSON
    superset). Every problem is a SpecError naming the field.
    """
    if isinstance(source, ExperimentSpec):
        return source
    if isinstance(source, Mapping):
        return _validate(dict(source))
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError("", f"spec is not UTF-8 text: {e}") from None
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and source.endswith((".yaml", ".yml", ".json"))):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError("", f"cannot read spec file {str(path)!r}: {e.strerror}") from None
        if content_type is None:
            content_type = "application/json" if path.suffix == ".json" else "application/yaml"
        source = text
    return _validate(_parse_text(source, content_type))


def _parse_text(text: str, content_type: str | None) -> Any:
    ct = (content_type or "").split(";")[0].strip().lower()
    use_json = ct.endswith("json") or (not ct and text.lstrip().startswith("{"))
    if use_json:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if ct and not ct.endswith(("yaml", "yml", "text/plain")):
        raise SpecError("", f"unsupported content type {content_type!r}; use application/json or application/yaml")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError("", f"invalid YAML{where}: {problem}") from None


def _validate(data: Any) -> ExperimentSpec:
    if not isinstance(data, dict):
        raise SpecError("", f"a spec must be a mapping of settings, got {type(data).__name__}")
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as e:
        raise _to_spec_error(e, data) from None


def _to_spec_error(exc: ValidationError, raw: Any) -> SpecError:
    problems: list[tuple[str, str, type[SpecError]]] = []
    for err in exc.errors():
        path = _path(err["loc"], raw)
        cls: type[SpecError] = SpecError
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):
            cls = type(inner)
            path = ".".join(p for p in (path, inner.field) if p) if not inner.field.startswith(path) else inner.field
            message = inner.message
        else:
            message = _message(err, path, raw)
        if all(p != path for p, _, _ in problems):
            problems.append((path, message, cls))
    path, message, cls = problems[0]
    if len(problems) > 1:
        message += "; also " + "; ".join(f"`{p}`: {m}" for p, m, _ in problems[1:])
    error = cls(path, message)
    error.problems = [{"field": p, "message": m} for p, m, _ in problems]  # type: ignore[attr-defined]
    return error


def _path(loc: tuple, raw: Any) -> str:
    """Pydantic's error location as the user wrote it: `worlds[1].params.omega`.

    Union / validator tags pydantic inserts (and the [0] of a scalar that was wrapped into a
    one-element list) are dropped by walking the raw input alongside the location.
    """
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            if isinstance(node, list | tuple):
                out += f"[{part}]"
                node = node[part] if part < len(node) else None
            continue
        if isinstance(node, dict) or (node is raw and not out):
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
        # otherwise: a tag pydantic added for a union member or a wrapped scalar
    return out


def _message(err: Mapping[str, Any], path: str, raw: Any) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key" + _valid_keys_hint(path)
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected']}, got {value!r}"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    msg = msg.replace("Input should be", "must be").replace("String should", "must")
    return f"{msg}, got {value!r}"


def _valid_keys_hint(path: str) -> str:
    """`; valid: [...]` for the model that rejected an unknown key (best effort)."""
    model: Any = ExperimentSpec
    parts = [p.split("[")[0] for p in path.split(".")[:-1]]
    for part in parts:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return ""
        model = _model_in(field.annotation)
        if model is None:
            return ""
    if part_ok := (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"; valid: {sorted(model.model_fields)}" if part_ok else ""
    return ""


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    for meta in getattr(annotation, "__metadata__", ()) or ():
        del meta
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        return _model_in(origin)
    return None
