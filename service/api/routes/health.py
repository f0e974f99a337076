"""/healthz (the process is up) and /readyz (it can do its job: store, Ray, database).

Both are exempt from the API token so that orchestrators' probes can call them; they reveal
only whether each dependency works, never paths, addresses or secrets.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Response

from service.api.deps import DbDep, SettingsDep, StoreDep
from service.api.schemas import CheckResult, Health, Readiness
from service.settings import Settings

router = APIRouter(tags=["health"])
RAY_CONNECT_TIMEOUT_S = 2.0


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        return pkg_version("worldsweep")
    except PackageNotFoundError:
        return "0+unknown"


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the server process answers."""
    return Health(status="ok", version=version())


def check_ray(settings: Settings) -> CheckResult:
    """Whether the configured Ray cluster's GCS port accepts a TCP connection.

    Deliberately not `ray.init()`: the server process never joins Ray (drivers run in worker
    processes), and a probe must stay cheap.
    """
    address = settings.ray_address
    if not address:
        return CheckResult(ok=True, detail="embedded: each experiment's driver starts a local Ray")
    if address == "auto":
        return CheckResult(ok=True, detail="auto: drivers join the local cluster Ray finds")
    parsed = urlsplit(address if "://" in address else f"gcs://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    if not host:
        return CheckResult(ok=False, detail="the Ray address cannot be parsed")
    try:
        with socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        return CheckResult(ok=False, detail=f"Ray cluster unreachable ({type(e).__name__})")
    return CheckResult(ok=True, detail="Ray cluster reachable")


def check_store(store: Any) -> CheckResult:
    try:
        store.check_writable()
    except Exception as e:  # any failure means not ready; the type is enough for a probe
        return CheckResult(ok=False, detail=f"store not writable ({type(e).__name__})")
    return CheckResult(ok=True, detail="store writable")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
def readyz(response: Response, settings: SettingsDep, db: DbDep, store: StoreDep) -> Readiness:
    """Readiness: the result store is writable, Ray is reachable and the database answers."""
    try:
        queue = {s: db.count(s) for s in ("queued", "running", "succeeded", "failed", "cancelled")}
        database = CheckResult(ok=True, detail="database answers")
    except Exception as e:
        queue, database = {}, CheckResult(ok=False, detail=f"database error ({type(e).__name__})")
    store_check, ray_check = check_store(store), check_ray(settings)
    ready = database.ok and store_check.ok and ray_check.ok
    response.status_code = 200 if ready else 503
    return Readiness(status="ready" if ready else "not ready", store=store_check, ray=ray_check,
                     database=database, queue=queue)
