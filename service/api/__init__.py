"""The worldsweep HTTP API: `create_app(settings)` builds the FastAPI application.

    uvicorn --factory service.api:create_app      # settings from WORLDSWEEP_* variables
    worldsweep serve                              # the same, plus the bind-address check

The lifespan opens the experiment database and the result store and starts the supervisor
that runs queued experiments in worker processes; at shutdown the workers are stopped and
their experiments stay `running`, to be resumed by the next start.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service.api.deps import require_token
from service.api.errors import BodySizeLimit, CatchAll, install_error_handlers
from service.api.routes import experiments, health, results
from service.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("worldsweep.api")

DESCRIPTION = """\
Submit experiment specs, follow their progress, and read per-seed results and statistics
(ΔNLL, struct − null contrasts, Lyapunov and dynamics summaries) of worldsweep sweeps.

With `WORLDSWEEP_API_TOKEN` set on the server, every `/experiments` request needs
`Authorization: Bearer <token>` (`/healthz`, `/readyz` and these docs are public).
Errors are JSON: `{"detail": "...", "field": "..."}`.
"""


def _summaries_from_docstrings(router: APIRouter) -> APIRouter:
    """First docstring line -> OpenAPI summary, the rest -> description."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            doc = inspect.getdoc(route.endpoint) or ""
            first, _, rest = doc.partition("\n")
            if first:
                route.summary = first.strip()
                route.description = rest.strip()
    return router


def _openapi_with_spec(app: FastAPI) -> None:
    """Add the ExperimentSpec schema (the POST body, parsed by hand for YAML) to components."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from service.spec import ExperimentSpec

            schema = base()
            spec = ExperimentSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(spec.pop("$defs", {}))
            components["ExperimentSpec"] = spec
        assert app.openapi_schema is not None  # noqa: S101 - base() (FastAPI.openapi) has set it
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app (settings from the environment when not given).

    With `settings.paused` the API accepts and queues experiments but starts no workers.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from service.db import Database
        from service.runner import Supervisor
        from service.store import ResultStore

        db = Database(settings.resolved_db_path())
        app.state.db = db
        app.state.store = ResultStore(settings.resolved_store())
        supervisor = Supervisor(settings, db)
        # may wait for a stale worker of a previous server to stop; paused: only the lock
        await run_in_threadpool(lambda: supervisor.start(paused=settings.paused))
        app.state.supervisor = supervisor
        log.info("worldsweep API ready (database %s)", db.path)
        try:
            yield
        finally:
            await run_in_threadpool(supervisor.stop)

    app = FastAPI(
        title="worldsweep",
        version=health.version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAll)  # added last: wraps the others
    app.include_router(_summaries_from_docstrings(health.router))
    for module in (experiments, results):
        app.include_router(_summaries_from_docstrings(module.router), dependencies=[Depends(require_token)])
    _openapi_with_spec(app)
    return app
