"""A real `worldsweep serve` (uvicorn) subprocess on a free loopback port, per test or module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.raytools import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    store: Path
    db: Path
    log: Path
    env: dict[str, str]
    args: list[str]
    proc: subprocess.Popen | None = None
    token: str | None = None
    _logs: list = field(default_factory=list)

    def start(self, timeout: float = 60) -> Server:
        fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(fh)
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", *self.args],
                                     cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not come up:\n{self.log.read_text()[-3000:]}")

    def client(self, token: str | None = None) -> httpx.Client:
        token = token if token is not None else self.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for fh in self._logs:
            fh.close()
        self._logs.clear()


def make_server(tmp: Path, *, token: str | None = None, extra_env: dict[str, str] | None = None,
                host: str = "127.0.0.1") -> Server:
    port = free_port()
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("WORLDSWEEP_")] + ["RAY_ADDRESS"]:
        env.pop(key, None)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    if token:
        env["WORLDSWEEP_API_TOKEN"] = token
    env.update(extra_env or {})
    store, db = tmp / "store", tmp / "server.db"
    args = ["--host", host, "--port", str(port), "--store", str(store), "--db", str(db), "--log-level", "warning"]
    return Server(url=f"http://{host}:{port}", store=store, db=db, log=tmp / "server.log", env=env,
                  args=args, token=token)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[Server] = []

    def factory(**kwargs) -> Server:
        server = make_server(tmp_path, **kwargs)
        started.append(server)
        return server

    yield factory
    for s in started:
        s.stop()
