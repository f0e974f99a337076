"""Python client of the worldsweep HTTP API (used by the CLI; handy in notebooks).

    from service.client import Client
    c = Client("http://127.0.0.1:8000")            # token from $WORLDSWEEP_API_TOKEN
    exp = c.submit("specs/quick.yaml")
    c.wait(exp["id"], progress=lambda e: print(e["progress"]))
    df = c.results_frame(exp["id"], model="gru")
    c.contrasts(exp["id"])["data"]

Errors come back as the worldsweep taxonomy: ExperimentNotFound for 404, SpecError (with the
server's `field`) for 422, and `ServerError` (a WorldsweepError carrying `status`) otherwise.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import httpx

from worlds.errors import ExperimentNotFound, SpecError, WorldsweepError

DEFAULT_SERVER = "http://127.0.0.1:8000"
FINAL = ("succeeded", "failed", "cancelled")


class ServerError(WorldsweepError):
    """The server answered with an error (or could not be reached: status 0)."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        self.status = status
        self.detail = detail
        self.field = field
        super().__init__(f"HTTP {status}: {detail}" if status else detail)


def default_server() -> str:
    return os.environ.get("WORLDSWEEP_SERVER") or DEFAULT_SERVER


class Client:
    def __init__(self, server_url: str | None = None, token: str | None = None, *,
                 timeout: float = 60.0) -> None:
        self.server_url = (server_url or default_server()).rstrip("/")
        token = token if token is not None else os.environ.get("WORLDSWEEP_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ServerError(0, f"cannot reach the worldsweep server at {self.server_url}: {e}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                detail, field = str(body.get("detail", r.text)), body.get("field")
            except ValueError:
                detail, field = r.text.strip() or r.reason_phrase, None
            if r.status_code == 404 and path.startswith("/experiments/"):
                raise ExperimentNotFound(path.split("/")[2])
            if r.status_code == 422:
                # the server's detail already reads "`field`: message"
                raise ServerError(422, detail, field) if not field else _spec_error(field, detail)
            raise ServerError(r.status_code, detail, field)
        return r

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- experiments -------------------------------------------------------------------
    def submit(self, spec: str | Path | Mapping[str, Any], *, force: bool = False) -> dict[str, Any]:
        """Submit a spec: a dict, a path to a .yaml / .json file, or YAML / JSON text."""
        if isinstance(spec, Mapping):
            kwargs: dict[str, Any] = {"json": dict(spec)}
        else:
            text, is_json = _spec_text(spec)
            ctype = "application/json" if is_json else "application/yaml"
            kwargs = {"content": text.encode(), "headers": {"Content-Type": ctype}}
        return self._json("POST", "/experiments", params={"force": "true"} if force else None, **kwargs)

    def get(self, experiment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/experiments/{experiment_id}")

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every experiment (all pages), oldest first."""
        out: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"limit": 1000, "offset": len(out)}
            if status:
                params["status"] = status
            page = self._json("GET", "/experiments", params=params)
            out += page["data"]
            if not page["data"] or len(out) >= page["count"]:
                return out

    def cancel(self, experiment_id: str) -> dict[str, Any]:
        return self._json("DELETE", f"/experiments/{experiment_id}")

    def wait(self, experiment_id: str, *, progress: Callable[[dict[str, Any]], None] | None = None,
             poll: float = 1.0, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the experiment is succeeded / failed / cancelled; returns its final state.

        `progress(experiment)` is called after every poll. TimeoutError after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            exp = self.get(experiment_id)
            if progress is not None:
                progress(exp)
            if exp["status"] in FINAL:
                return exp
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {experiment_id} still {exp['status']} after {timeout} s")
            time.sleep(poll)

    # -- results and statistics --------------------------------------------------------
    def results(self, experiment_id: str, format: str = "json", *, limit: int | None = None,
                offset: int | None = None, **filters: Any) -> Any:
        """Per-seed rows. json -> list of row dicts; csv -> str; parquet -> bytes.

        `filters` are column = value (or a list of values), e.g. `model="gru", hidden_dim=[4, 8]`.
        `limit` / `offset` page JSON rows (stable order; the server's `total` is in
        `results_page`).
        """
        return self._results(experiment_id, format, limit, offset, filters)

    def results_page(self, experiment_id: str, *, limit: int | None = None, offset: int | None = None,
                     **filters: Any) -> dict[str, Any]:
        """The whole JSON response of one page: data, count (rows here), total, offset, limit."""
        r = self._results_request(experiment_id, "json", limit, offset, filters)
        return cast(dict[str, Any], r.json())

    def _results(self, experiment_id: str, format: str, limit: int | None, offset: int | None,
                 filters: dict[str, Any]) -> Any:
        r = self._results_request(experiment_id, format, limit, offset, filters)
        if format == "json":
            return r.json()["data"]
        if format == "csv":
            return r.text
        return r.content

    def _results_request(self, experiment_id: str, format: str, limit: int | None, offset: int | None,
                         filters: dict[str, Any]) -> httpx.Response:
        params: list[tuple[str, str]] = [("format", format)]
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset is not None:
            params.append(("offset", str(offset)))
        for name, value in filters.items():
            for v in value if isinstance(value, list | tuple | set) else [value]:
                params.append((name, str(v).lower() if isinstance(v, bool) else str(v)))
        return self._request("GET", f"/experiments/{experiment_id}/results", params=params)

    def results_frame(self, experiment_id: str, **filters: Any) -> Any:
        """Per-seed rows as a pandas DataFrame (fetched as Parquet: types and the spectrum kept)."""
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.results(experiment_id, "parquet", **filters)))

    def delta_nll(self, experiment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/experiments/{experiment_id}/delta-nll")

    def contrasts(self, experiment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/experiments/{experiment_id}/contrasts")

    def lyapunov(self, experiment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/experiments/{experiment_id}/lyapunov")

    def dynamics(self, experiment_id: str) -> dict[str, Any]:
        return self._json("GET", f"/experiments/{experiment_id}/dynamics")

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """/readyz's body, whether ready (200) or not (503)."""
        try:
            r = self._http.get("/readyz")
        except httpx.HTTPError as e:
            raise ServerError(0, f"cannot reach the worldsweep server at {self.server_url}: {e}") from None
        return r.json()


def _spec_error(field: str, detail: str) -> SpecError:
    prefix = f"`{field}`: "
    return SpecError(field, detail[len(prefix):] if detail.startswith(prefix) else detail)


def _spec_text(spec: str | Path) -> tuple[str, bool]:
    """(text, is_json) of a spec given as a file path or as text."""
    if isinstance(spec, Path) or ("\n" not in spec and Path(spec).is_file()):
        path = Path(spec)
        try:
            return path.read_text(), path.suffix.lower() == ".json"
        except OSError as e:
            raise SpecError("spec", f"cannot read {str(path)!r}: {e.strerror}") from None
    return spec, spec.lstrip().startswith("{")
