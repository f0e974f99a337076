"""/experiments/{id}/results and the statistics computed from them.

All of these are plain `def` routes: FastAPI runs them in its threadpool, so reading Parquet
and computing permutation tests never blocks the event loop. Statistics are computed from
whatever the store holds, so they are available (and say they are partial) while a sweep runs.
"""

from __future__ import annotations

import io
import json
import math
from typing import Annotated, Any, Literal, cast

import pandas as pd
from fastapi import APIRouter, Query, Request, Response

from service.api.deps import DbDep, ExperimentId, StoreDep
from service.api.routes.experiments import ERRORS
from service.api.schemas import (
    ROW_COLUMNS,
    ContrastsResponse,
    DeltaNllResponse,
    DynamicsResponse,
    LyapunovResponse,
    ResultsResponse,
    Status,
)
from service.db import ExperimentRecord
from worlds.errors import SpecError

router = APIRouter(prefix="/experiments/{experiment_id}", tags=["results"])

# query parameters of /results that are not column filters (no result column has these names)
PARAMS = ("format", "limit", "offset")
# columns a results query may filter on: every scalar column (not the spectrum list)
FILTERABLE = {name: kind for name, kind in ROW_COLUMNS.items() if kind != "list<float>"}
assert not set(PARAMS) & set(FILTERABLE)  # noqa: S101 - a column named like a parameter could not be filtered
MAX_LIMIT = 100_000
PARQUET = "application/vnd.apache.parquet"


def read_rows(store: Any, experiment_id: str, filters: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The experiment's stored rows (none before its first chunk lands); the store converts
    the filter strings to each column's type and names the column when one does not fit."""
    return store.read(experiment_id, filters or None)


def parse_filters(request: Request) -> dict[str, list[str]]:
    """Query parameters other than `format`, `limit` and `offset` are column filters;
    repeating one means "any of"."""
    filters: dict[str, list[str]] = {}
    for name, raw in request.query_params.multi_items():
        if name in PARAMS:
            continue
        if name not in FILTERABLE:
            raise SpecError(name, f"unknown filter column; filterable: {sorted(FILTERABLE)}")
        filters.setdefault(name, []).append(raw)
    return filters


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf -> None, numpy scalars and arrays -> Python."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _clean(v) for k, v in row.items()} for row in cast(list[dict[str, Any]], df.to_dict(orient="records"))]


@router.get(
    "/results",
    response_model=ResultsResponse,
    responses={**ERRORS, 200: {"content": {"text/csv": {}, PARQUET: {}},
                               "description": "per-seed rows as JSON (default), CSV or Parquet"}},
)
def get_results(
    experiment_id: ExperimentId, request: Request, db: DbDep, store: StoreDep,
    format: Annotated[Literal["json", "csv", "parquet"], Query(description="response format")] = "json",
    limit: Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description=(
        "JSON only: at most this many rows (default: all)"))] = None,
    offset: Annotated[int, Query(ge=0, description="JSON only: skip this many rows first")] = 0,
) -> Any:
    """Per-seed result rows; filter with any column as a query parameter (`?model=gru&seed=1234`).

    Rows come in a stable order (world, model, hidden_dim, mode, time_cond, lr, batch_size,
    steps, search_sample, config_id, seed); JSON pages with `limit` / `offset`, and `total`
    counts the matching rows of every page."""
    rec = db.get(experiment_id)
    filters = parse_filters(request)
    df = read_rows(store, experiment_id, filters)
    if format == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return Response(buf.getvalue(), media_type=PARQUET,
                        headers={"Content-Disposition": f'attachment; filename="{experiment_id}.parquet"'})
    if format == "csv":
        out = df.copy()
        for col in out.columns:  # list cells (the spectrum) as JSON arrays, not numpy reprs
            if out[col].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
                out[col] = out[col].map(lambda v: json.dumps(_clean(v)))
        return Response(out.to_csv(index=False), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{experiment_id}.csv"'})
    total = len(df)
    page = df.iloc[offset:] if limit is None else df.iloc[offset:offset + limit]
    return ResultsResponse(experiment=experiment_id, status=cast(Status, rec.status), count=len(page),
                           total=total, offset=offset, limit=limit, filters=filters,
                           columns=list(df.columns), data=records(page))


# -- statistics ------------------------------------------------------------------------
def _envelope(rec: ExperimentRecord, df: pd.DataFrame) -> dict[str, Any]:
    n_valid = int(df["valid"].fillna(False).astype(bool).sum()) if "valid" in df.columns else 0
    return dict(experiment=rec.id, status=rec.status, n_seed_runs=len(df), n_valid=n_valid,
                n_seed_runs_planned=rec.n_seed_runs,
                partial=rec.status != "succeeded" or len(df) < rec.n_seed_runs)


def _table(name: str, df: pd.DataFrame) -> list[Any]:
    """Rows as plain dicts; the response models validate them into their row models."""
    if df.empty:
        return []
    from stats import report

    return [_clean(row) for row in getattr(report, name)(df)]


def _stats(db: DbDep, store: StoreDep, experiment_id: str) -> tuple[ExperimentRecord, pd.DataFrame]:
    rec = db.get(experiment_id)
    return rec, read_rows(store, experiment_id)


@router.get("/delta-nll", response_model=DeltaNllResponse, responses=ERRORS)
def get_delta_nll(experiment_id: ExperimentId, db: DbDep, store: StoreDep) -> DeltaNllResponse:
    """ΔNLL per group: n, mean, std, t and BCa 95% intervals, sign-flip p, Holm / BH adjusted p."""
    rec, df = _stats(db, store, experiment_id)
    return DeltaNllResponse(**_envelope(rec, df), data=_table("delta_nll_table", df))


@router.get("/contrasts", response_model=ContrastsResponse, responses=ERRORS)
def get_contrasts(experiment_id: ExperimentId, db: DbDep, store: StoreDep) -> ContrastsResponse:
    """Structured world vs its null(s) per model configuration: paired by seed, p-values, effect size."""
    rec, df = _stats(db, store, experiment_id)
    return ContrastsResponse(**_envelope(rec, df), data=_table("contrasts_table", df))


@router.get("/lyapunov", response_model=LyapunovResponse, responses=ERRORS)
def get_lyapunov(experiment_id: ExperimentId, db: DbDep, store: StoreDep) -> LyapunovResponse:
    """Lyapunov summaries per group (λ1 mean and CI, gap, sum, KY dimension, labels) and λ1 model comparisons."""
    rec, df = _stats(db, store, experiment_id)
    return LyapunovResponse(**_envelope(rec, df), data=_table("lyapunov_table", df),
                            comparisons=_table("lyapunov_comparisons", df))


@router.get("/dynamics", response_model=DynamicsResponse, responses=ERRORS)
def get_dynamics(experiment_id: ExperimentId, db: DbDep, store: StoreDep) -> DynamicsResponse:
    """Coasting and hallucination summaries per group."""
    rec, df = _stats(db, store, experiment_id)
    return DynamicsResponse(**_envelope(rec, df), data=_table("dynamics_table", df))
