"""Every request and response body of the HTTP API, in one module (typed: they make /openapi.json)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, cast

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


class Experiment(ExperimentSummary):
    """An experiment with its spec."""

    attempts: int = Field(description="how many times a worker was started (resumes count)")
    spec: dict[str, Any]


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
    **cast(dict[str, Any], {name: (_PY[kind] | None, None) for name, kind in ROW_COLUMNS.items()}),
)


class ResultsResponse(BaseModel):
    experiment: str
    status: Status
    count: int = Field(description="rows returned (one per seed-run), in this page")
    total: int = Field(description="rows matching the filters, in all pages")
    offset: int = Field(default=0, description="rows skipped before this page")
    limit: int | None = Field(default=None, description="the page size asked for (null: all)")
    filters: dict[str, list[str]]
    columns: list[str]
    data: list[ResultRow]  # type: ignore[valid-type]


# -- statistics (rows of stats.report; field names are the issue-5 contract) -------------
Pair = list[float | None]  # an interval [low, high]; null ends where undefined (n < 2)


class GroupKey(BaseModel):
    """The axis columns a group of seeds is keyed by (stats.report.GROUP_COLUMNS)."""

    model_config = ConfigDict(extra="allow")

    world: str | None = None
    world_params: str | None = Field(default=None, description="JSON of the world overrides")
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
    search_sample: int | None = Field(default=None, description="Optuna sample (searches only)")


class DeltaNllRow(GroupKey):
    world_role: str | None = None
    world_family: str | None = None
    n: int = Field(description="valid seeds in the group (invalid / non-finite rows excluded)")
    n_invalid: int
    mean: float | None = Field(description="mean ΔNLL = NLL_baseline − NLL_model (nats/step); > 0 beats the baseline")
    std: float | None
    ci95: Pair = Field(description="t-based 95% interval [low, high]")
    ci95_bca: Pair = Field(description="BCa bootstrap 95% interval")
    p_value: float | None = Field(description="one-sided sign-flip test of mean ΔNLL > 0")
    exact: bool = Field(description="p from all 2^n sign patterns (else Monte Carlo)")
    p_holm: float | None = Field(description="Holm-adjusted across the table")
    p_bh: float | None = Field(description="Benjamini–Hochberg-adjusted across the table")


class ContrastRow(GroupKey):
    world_family: str
    struct_world: str
    null_world: str
    null_role: str = Field(description="null | null_iid")
    null_world_params: str | None = None
    n_pairs: int = Field(description="seeds valid on both sides")
    n_struct: int
    n_null: int
    n_invalid: int
    mean_diff: float | None = Field(description="mean of ΔNLL(struct) − ΔNLL(null), paired by seed")
    std_diff: float | None
    ci95: Pair
    ci95_bca: Pair
    p_value: float | None = Field(description="paired sign-flip test of struct − null > 0")
    exact: bool
    p_two_sample: float | None = Field(description="label permutation test, struct > null (unpaired)")
    p_holm: float | None
    p_bh: float | None
    cohen_dz: float | None
    seeds_for_80pct_power: int | None = Field(description="seeds for 80% power at α = 0.05 (null: unreachable)")


class LyapunovRow(GroupKey):
    n: int = Field(description="seeds with a finite λ1")
    n_invalid: int
    lambda1_mean: float | None
    lambda1_std: float | None
    lambda1_ci95: Pair
    gap_mean: float | None = Field(description="mean λ1 − λ2")
    sum_mean: float | None = Field(description="mean Σλ")
    ky_dim_mean: float | None = Field(description="mean Kaplan–Yorke dimension")
    label_counts: dict[str, int] = Field(description="seeds per label (marginal / sink / chaotic / ...)")
    mean_spectrum: list[float | None] | None = Field(description="elementwise mean spectrum (nats/step)")


class LyapunovComparison(GroupKey):
    """λ1 of two model types in otherwise equal groups."""

    model_a: str
    model_b: str
    n_a: int
    n_b: int
    lambda1_mean_a: float | None
    lambda1_mean_b: float | None
    lambda1_diff: float | None = Field(description="a − b")
    p_welch: float | None = Field(description="two-sided Welch t-test")
    p_permutation: float | None = Field(description="two-sided label permutation test")
    p_holm: float | None = Field(description="of p_permutation, across the comparisons")
    p_bh: float | None


class DynamicsRow(GroupKey):
    world_role: str | None = None
    world_family: str | None = None
    n: int
    n_invalid: int
    lambda1_mean: float | None
    coast_n: int
    coast_retention_mean: float | None
    coast_retention_ci95: Pair
    coast_autocorr_mean: float | None
    coast_mean_abs_mean: float | None
    coast_decay_mean: float | None
    coast_label_counts: dict[str, int] = Field(description="inertial / dissipative")
    halluc_n: int = Field(description="seeds with a hallucination measurement (null-trained models)")
    halluc_var_mean: float | None
    halluc_mean_abs_mean: float | None
    halluc_label_counts: dict[str, int] = Field(description="hallucination / nihilism")


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
