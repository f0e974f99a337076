"""The one place that maps the worldsweep error taxonomy (worlds.errors) to HTTP.

Every error leaves the server as JSON `{"detail": message, "field": name-or-null}`; an
unexpected exception becomes a 500 with a generic message (the traceback goes to the server
log, never to the client).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worlds.errors import (
    ClusterError,
    ExperimentNotFound,
    LimitExceeded,
    SpecError,
    StoreError,
    WorldsweepError,
)

log = logging.getLogger("worldsweep.api")

# most specific first: the first isinstance match wins
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (ExperimentNotFound, 404),
    (LimitExceeded, 422),
    (SpecError, 422),  # incl. UnknownWorld, UnknownParameter
    (StoreError, 503),
    (ClusterError, 503),
    (WorldsweepError, 400),
)


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body larger than this server's limit of {limit} bytes "
                         "(WORLDSWEEP_MAX_BODY_BYTES)")


def error_body(detail: str, field: str | None = None) -> dict[str, str | None]:
    return {"detail": detail, "field": field}


def status_for(exc: Exception) -> int:
    return next(code for kind, code in STATUS_OF if isinstance(exc, kind))


async def _worldsweep_error(request: Request, exc: WorldsweepError) -> JSONResponse:
    code = status_for(exc)
    if isinstance(exc, SpecError):
        body = error_body(str(exc), exc.field or None)
    else:
        body = error_body(str(exc))
    if code >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, code, exc)
    return JSONResponse(body, status_code=code)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    detail = f"`{field}`: {msg}" if field else msg
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return JSONResponse(error_body(detail, field), status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse(error_body(str(exc), "body"), status_code=413)


def install_error_handlers(app: FastAPI) -> None:
    # Starlette types handlers as taking any Exception; each of these takes only its own class.
    app.add_exception_handler(WorldsweepError, _worldsweep_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(BodyTooLarge, _too_large)  # type: ignore[arg-type]


class CatchAll:
    """ASGI middleware: any exception no handler claimed becomes a generic 500 JSON answer.

    Logged here with its traceback (server side only). Unlike Starlette's ServerErrorMiddleware
    it does not re-raise, so uvicorn keeps the client's keep-alive connection open instead of
    dropping it after the answer.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # half-sent: only closing the connection can tell the client
            response = JSONResponse(error_body("internal server error; see the server log"), status_code=500)
            await response(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware: refuse bodies above `max_bytes` with 413.

    A declared Content-Length above the limit is refused before reading; otherwise the bytes
    are counted as they arrive (chunked uploads, or a Content-Length that lies) and reading
    stops at the limit, so a client can never make the server buffer more than that.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(error_body(str(BodyTooLarge(self.max_bytes)), "body"), status_code=413,
                                headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
