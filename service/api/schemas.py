"""Every request and response body of the HTTP API, in one module (typed: they make /openapi.json)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from service.store import COLUMNS

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# starts with a letter or digit and has no `/`: never `.`, `..` or a path
EXPERIMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


class ErrorResponse(BaseModel):
    """Every error: a message, and the offending field where there is one."""

    detail: str = Field(examples=["`seeds.count` must be >= 1, got -3"])
    field: str | None = Field(default=None, examples=["seeds.count"])


class Progress(BaseModel):
    seed_runs_total: int
    seed_runs_done: int
    seed_runs_failed: int
    eta_seconds: float | None = Field(description="estimated seconds left (null when unknown)")
    fraction: float = Field(description="(done + failed) / total")


class ExperimentCreated(BaseModel):
    id: str
    status: Status
    n_trials: int
    n_seed_runs: int
    spec_hash: str
    existing: bool = Field(description="true when the same spec had been submitted before and that "
                                       "experiment is returned (re-queued if it had failed or been cancelled)")
    location: str


class Experiment(BaseModel):
    id: str
    name: str
    status: Status
    spec_hash: str
    n_trials: int
    n_seed_runs: int
    progress: Progress
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(description="how many times a worker was started (resumes count)")
    spec: dict[str, Any]


class ExperimentSummary(BaseModel):
    """An experiment without its spec (list view)."""

    id: str
    name: str
    status: Status
    spec_hash: str
    n_trials: int
    n_seed_runs: int
    progress: Progress
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ExperimentList(BaseModel):
    data: list[ExperimentSummary]
    count: int


# -- results ---------------------------------------------------------------------------
_PY = {"str": str, "int": int, "float": float, "bool": bool, "list<float>": list[float]}
# every stored column: the trainer's RESULT_COLUMNS, the driver's and the store's own
ROW_COLUMNS: dict[str, str] = dict(COLUMNS)

ResultRow = create_model(
    "ResultRow",
    __config__=ConfigDict(extra="allow"),
    __doc__="One seed-run: every column of the result store (NaN is sent as null).",
    **{name: (_PY[kind] | None, None) for name, kind in ROW_COLUMNS.items()},
)


class ResultsResponse(BaseModel):
    experiment: str
    status: Status
    count: int = Field(description="rows returned (one per seed-run)")
    filters: dict[str, list[str]]
    columns: list[str]
    data: list[ResultRow]  # type: ignore[valid-type]


# -- statistics ------------------------------------------------------------------------
class GroupKey(BaseModel):
    """The axis columns a group of seeds is keyed by (those present in the experiment)."""

    model_config = ConfigDict(extra="allow")

    world: str | None = None
    world_role: str | None = None
    world_family: str | None = None
    world_params: str | None = None
    seq_len: int | None = None
    model: str | None = None
    hidden_dim: int | None = None
    mode: str | None = None
    time_cond: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    steps: int | None = None
    n_train: int | None = None
    n_eval: int | None = None
    baseline_kind: str | None = None


class DeltaNllRow(GroupKey):
    n: int = Field(description="valid seeds in the group")
    n_invalid: int
    mean: float | None
    std: float | None
    ci95: list[float | None] | None = Field(description="t-based 95% interval [low, high]")
    ci95_bca: list[float | None] | None = Field(description="BCa bootstrap 95% interval")
    p_value: float | None = Field(description="one-sided sign-flip test of mean ΔNLL > 0")
    exact: bool | None = Field(description="p from all 2^n sign patterns (else Monte Carlo)")
    p_holm: float | None
    p_bh: float | None


class ContrastRow(GroupKey):
    structured: str | None = None
    null: str | None = None
    n_pairs: int
    mean_diff: float | None
    ci95: list[float | None] | None
    p_value: float | None = Field(description="paired sign-flip test of struct − null > 0")
    p_two_sample: float | None
    p_holm: float | None
    p_bh: float | None
    cohen_dz: float | None
    seeds_for_80pct_power: int | None


class LyapunovRow(GroupKey):
    n: int
    lambda1_mean: float | None
    lambda1_ci95: list[float | None] | None
    gap_mean: float | None
    sum_mean: float | None
    ky_dim_mean: float | None
    label_counts: dict[str, int] = Field(default_factory=dict)
    spectrum_mean: list[float | None] | None = None


class LyapunovComparison(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_a: str | None = None
    model_b: str | None = None
    n_a: int | None = None
    n_b: int | None = None
    mean_diff: float | None = None
    p_welch: float | None = None
    p_permutation: float | None = None


class DynamicsRow(GroupKey):
    n: int


class _StatsEnvelope(BaseModel):
    experiment: str
    status: Status
    n_seed_runs: int = Field(description="stored seed-run rows the statistics are based on")
    n_valid: int = Field(description="of which valid (invalid rows are excluded and counted)")
    n_seed_runs_planned: int
    partial: bool = Field(description="true while the experiment has not stored every seed-run")


class DeltaNllResponse(_StatsEnvelope):
    data: list[DeltaNllRow]


class ContrastsResponse(_StatsEnvelope):
    data: list[ContrastRow]


class LyapunovResponse(_StatsEnvelope):
    data: list[LyapunovRow]
    comparisons: list[LyapunovComparison]


class DynamicsResponse(_StatsEnvelope):
    data: list[DynamicsRow]


# -- health ----------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]
    version: str


class CheckResult(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    store: CheckResult
    ray: CheckResult
    database: CheckResult
    queue: dict[str, int] = Field(description="experiments per status")
