"""Dependencies shared by the routes: settings, database, store, supervisor, auth, ids."""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.schemas import EXPERIMENT_ID_PATTERN
from service.db import Database
from service.runner import Supervisor
from service.settings import Settings

_ID_RE = re.compile(EXPERIMENT_ID_PATTERN)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_store(request: Request) -> Any:
    return request.app.state.store


def get_supervisor(request: Request) -> Supervisor | None:
    return request.app.state.supervisor


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[Any, Depends(get_store)]
SupervisorDep = Annotated["Supervisor | None", Depends(get_supervisor)]

# auto_error=False: we answer 401 ourselves (and only when a token is configured); declaring
# the scheme makes /docs offer an "Authorize" button.
_bearer = HTTPBearer(auto_error=False, description="the server's WORLDSWEEP_API_TOKEN")


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With WORLDSWEEP_API_TOKEN set, the request must carry `Authorization: Bearer <token>`."""
    expected = settings.token()
    if expected is None:
        return
    if credentials is None:
        raise HTTPException(401, "missing `Authorization: Bearer <token>` header",
                            headers={"WWW-Authenticate": "Bearer"})
    # constant-time: the comparison must not leak how much of the token was right
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})


ExperimentId = Annotated[
    str,
    Path(description="experiment id: letters, digits, `.`, `-` and `_` (not first), at most 128 characters",
         pattern=EXPERIMENT_ID_PATTERN, max_length=128),
]


def valid_experiment_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))
