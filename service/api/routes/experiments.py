"""/experiments: submit a spec, list, inspect, cancel."""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

import yaml
from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import DbDep, ExperimentId, SettingsDep, SupervisorDep
from service.api.schemas import (
    ErrorResponse,
    Experiment,
    ExperimentCreated,
    ExperimentList,
    ExperimentSummary,
    Progress,
    Status,
    ts,
)
from service.db import Database, ExperimentRecord
from service.settings import Settings
from worlds.errors import SpecError

router = APIRouter(prefix="/experiments", tags=["experiments"])

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SNIFF_TYPES = ("", "text/plain")  # no declared type: JSON if it starts with "{", else YAML

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong API token"},
    404: {"model": ErrorResponse, "description": "no experiment with that id"},
    422: {"model": ErrorResponse, "description": "invalid input; `field` names it"},
}


# -- converting records ----------------------------------------------------------------
def progress_of(rec: ExperimentRecord) -> Progress:
    total = rec.seed_runs_total or rec.n_seed_runs
    finished = rec.seed_runs_done + rec.seed_runs_failed
    return Progress(seed_runs_total=total, seed_runs_done=rec.seed_runs_done,
                    seed_runs_failed=rec.seed_runs_failed,
                    eta_seconds=None if rec.status != "running" else rec.eta_seconds,
                    fraction=min(1.0, finished / total) if total else 1.0)


def _common(rec: ExperimentRecord) -> dict[str, Any]:
    return dict(id=rec.id, name=rec.name, status=rec.status, spec_hash=rec.spec_hash,
                n_trials=rec.n_trials, n_seed_runs=rec.n_seed_runs, progress=progress_of(rec),
                error=rec.error, created_at=ts(rec.created_at), updated_at=ts(rec.updated_at),
                started_at=ts(rec.started_at), finished_at=ts(rec.finished_at))


def experiment_of(rec: ExperimentRecord) -> Experiment:
    return Experiment(**_common(rec), attempts=rec.attempts, spec=rec.spec)


def location(experiment_id: str) -> str:
    return f"/experiments/{experiment_id}"


# -- submission ------------------------------------------------------------------------
class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a few hundred bytes of nested aliases expand to
    billions of nodes ("billion laughs"); specs never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError("body", f"YAML aliases (*{event.anchor}) are not accepted "
                                    f"(line {event.start_mark.line + 1}); write the values out")
        return super().compose_node(parent, index)


def parse_body(body: bytes, content_type: str) -> Any:
    """The request body as data, by Content-Type. Syntax errors name line and column."""
    ct = content_type.split(";")[0].strip().lower()
    if ct not in JSON_TYPES + YAML_TYPES + SNIFF_TYPES:
        raise HTTPException(415, f"unsupported Content-Type {ct!r}: send the spec as application/json "
                                 "or application/yaml")
    if not body.strip():
        raise SpecError("body", "empty request body: send an experiment spec")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("body", f"the body is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if ct in JSON_TYPES or (ct in SNIFF_TYPES and text.lstrip().startswith("{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError("body", f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError("body", f"malformed YAML{where}: {problem}") from None


def submit(body: bytes, content_type: str, settings: Settings, db: Database,
           force: bool) -> tuple[ExperimentRecord, bool, bool]:
    """Validate and queue. Returns (record, existing, queued_now)."""
    from service.spec import load_spec

    data = parse_body(body, content_type)
    if not isinstance(data, dict):
        raise SpecError("body", f"a spec must be a mapping of settings, got {type(data).__name__}")
    # a dict, never text: load_spec would read a local file for a body like "x.yaml"
    spec = load_spec(data)
    spec.check_limits(settings.limits())
    if ".." in spec.name:  # the id becomes a store path component, where ".." is refused
        raise SpecError("name", f"must not contain '..', got {spec.name!r}")
    return db.submit(base_id=spec.experiment_id(), name=spec.name, spec=spec.canonical(),
                     spec_hash=spec.content_hash(), n_trials=spec.n_trials, n_seed_runs=spec.n_seed_runs,
                     force=force)


SPEC_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    # the schema itself is added to components by service.api (`_openapi_with_spec`)
    "application/json": {"schema": {"$ref": "#/components/schemas/ExperimentSpec"}},
    "application/yaml": {"schema": {"type": "string", "description": "the same spec as YAML"}},
}}}


@router.post(
    "",
    status_code=202,
    response_model=ExperimentCreated,
    responses={**ERRORS, 200: {"model": ExperimentCreated, "description": "the same spec was submitted "
                               "before; that experiment is returned unchanged"},
               413: {"model": ErrorResponse, "description": "body too large"},
               415: {"model": ErrorResponse, "description": "unsupported Content-Type"}},
    openapi_extra=SPEC_BODY,
)
async def submit_experiment(
    request: Request, response: Response, settings: SettingsDep, db: DbDep, supervisor: SupervisorDep,
    force: Annotated[bool, Query(description="queue a new experiment even if this spec was submitted before")] = False,
) -> ExperimentCreated:
    """Submit an experiment spec (JSON, or YAML with Content-Type: application/yaml)."""
    body = await request.body()  # bounded by the BodySizeLimit middleware
    rec, existing, queued = await run_in_threadpool(
        submit, body, request.headers.get("content-type", ""), settings, db, force)
    if queued and supervisor is not None:
        supervisor.wake()
    response.status_code = 202 if queued else 200
    response.headers["Location"] = location(rec.id)
    return ExperimentCreated(id=rec.id, status=cast(Status, rec.status), n_trials=rec.n_trials, n_seed_runs=rec.n_seed_runs,
                             spec_hash=rec.spec_hash, existing=existing, location=location(rec.id))


# -- reading and cancelling ------------------------------------------------------------
@router.get("", response_model=ExperimentList, responses={401: ERRORS[401], 422: ERRORS[422]})
def list_experiments(
    db: DbDep,
    status: Annotated[Status | None, Query(description="only experiments in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ExperimentList:
    """List experiments, oldest first (`count` is the total matching, `data` one page)."""
    records = db.list(status=status, limit=limit, offset=offset)
    return ExperimentList(data=[ExperimentSummary(**_common(r)) for r in records], count=db.count(status))


@router.get("/{experiment_id}", response_model=Experiment, responses=ERRORS)
def get_experiment(experiment_id: ExperimentId, db: DbDep) -> Experiment:
    """One experiment: status, progress (seed-runs done / failed / total, ETA), spec, error."""
    return experiment_of(db.get(experiment_id))


@router.delete(
    "/{experiment_id}",
    status_code=202,
    response_model=Experiment,
    responses={**ERRORS, 409: {"model": ErrorResponse, "description": "already finished"}},
)
def cancel_experiment(experiment_id: ExperimentId, db: DbDep, supervisor: SupervisorDep) -> Experiment:
    """Cancel a queued or running experiment; its stored seed-runs are kept."""
    rec = db.get(experiment_id)
    if rec.status in ("succeeded", "failed"):
        raise HTTPException(409, f"experiment {experiment_id!r} already {rec.status}; nothing to cancel")
    rec = db.cancel(experiment_id)
    if supervisor is not None:
        supervisor.wake()
    return experiment_of(rec)
