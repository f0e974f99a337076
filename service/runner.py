"""The queue and its supervisor: runs each experiment's driver in its own worker process.

A crashing sweep (segfault, OOM kill, a bug in a driver) takes down only its worker, never the
server. The supervisor is one thread in the server process: it claims queued experiments from
the database (up to `max_concurrent` at once), starts `python -m service.worker <id>` for each,
reaps workers that exit, and terminates workers whose experiment was cancelled and which did
not stop on their own within `cancel_grace_s`.

Restarts: on start, experiments left `running` by a previous server (killed, crashed, or shut
down with sweeps in flight) are put back in the queue; their workers re-run the driver, which
skips every seed-run already in the store. A stale worker of the previous server that is still
alive is terminated first, so no seed-run is ever trained by two drivers at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from service.db import Database
from service.settings import Settings
from worlds.errors import StoreError

log = logging.getLogger("worldsweep.runner")

TERM_WAIT_S = 5.0  # after SIGTERM, how long a worker gets before SIGKILL


@dataclass
class Worker:
    experiment_id: str
    proc: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    cancel_seen: float | None = None  # when the supervisor first saw the experiment cancelled
    term_sent: float | None = None


def worker_command(experiment_id: str) -> list[str]:
    return [sys.executable, "-m", "service.worker", experiment_id]


def _is_our_worker(pid: int, experiment_id: str) -> bool:
    """Whether `pid` is a live `service.worker` process for this experiment (Linux /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"service.worker" in cmdline and experiment_id.encode() in cmdline


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # workers lead their own process group (start_new_session)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _log_tail(path: Path, max_chars: int = 2000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_chars))
            return fh.read().decode(errors="replace").strip()
    except OSError:
        return ""


class Supervisor:
    """Owns the worker processes of one server. `start()` in the app's lifespan, `stop()` at exit."""

    def __init__(self, settings: Settings, db: Database, *, poll_interval: float = 0.5) -> None:
        self.settings = settings
        self.db = db
        self.poll_interval = poll_interval
        self.workers: dict[str, Worker] = {}
        self.log_dir = db.path.parent / "logs"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fh: TextIO | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, *, paused: bool = False) -> None:
        """Take the database lock; unless `paused`, resume left-over work and start the loop."""
        self._take_lock()
        if paused:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="worldsweep-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and the workers. Their experiments stay `running` and resume at next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for w in self.workers.values():
            _signal_group(w.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + max(self.settings.cancel_grace_s, TERM_WAIT_S)
        for w in self.workers.values():
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(w.proc.pid, signal.SIGKILL)
                w.proc.wait(timeout=10)
        self.workers.clear()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def wake(self) -> None:
        """Look at the queue now (after a submit or cancel) rather than at the next poll."""
        self._wake.set()

    def _take_lock(self) -> None:
        # Two servers on one database would each resume the other's running experiments.
        path = self.db.path.with_name(self.db.path.name + ".lock")
        fh = open(path, "a+")  # noqa: SIM115 - held for the server's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise StoreError(f"another worldsweep server is already using the database {self.db.path}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def recover(self) -> None:
        """Re-queue experiments a previous server left `running`; end its stale workers first."""
        for rec in self.db.list():
            if rec.worker_pid and rec.status in ("running", "cancelled") and _is_our_worker(rec.worker_pid, rec.id):
                log.warning("terminating stale worker %d of %s", rec.worker_pid, rec.id)
                self._terminate_pid(rec.worker_pid)
            if rec.status == "running":
                log.info("resuming experiment %s", rec.id)
                self.db.requeue(rec.id)
            elif rec.worker_pid:
                self.db.set_worker(rec.id, None)

    def _terminate_pid(self, pid: int) -> None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + max(self.settings.cancel_grace_s, TERM_WAIT_S)
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return
            except (OSError, IndexError):
                return
            time.sleep(0.1)
        _signal_group(pid, signal.SIGKILL)

    # -- the loop ----------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._tick()
            except Exception:  # never let one bad tick kill the queue
                log.exception("supervisor tick failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        self._reap()
        while len(self.workers) < self.settings.max_concurrent and not self._stopping.is_set():
            rec = self.db.claim_next(exclude=set(self.workers))
            if rec is None:
                break
            self._spawn(rec.id)

    def _reap(self) -> None:
        now = time.monotonic()
        for eid, w in list(self.workers.items()):
            rc = w.proc.poll()
            if rc is not None:
                del self.workers[eid]
                rec = self.db.get(eid)
                if rec.status == "running":
                    # the worker always records how it ended; if it did not, it died
                    tail = _log_tail(w.log_path)
                    reason = f"worker exited with code {rc}" + (f":\n{tail}" if tail else "")
                    self.db.finish(eid, "failed", error=reason)
                    log.error("experiment %s: %s", eid, reason)
                if rec.worker_pid == w.proc.pid:
                    self.db.set_worker(eid, None)
                self._wake.set()  # a slot is free
                continue
            if self.db.stop_requested(eid):
                w.cancel_seen = w.cancel_seen or now
                if w.term_sent is None and now - w.cancel_seen >= self.settings.cancel_grace_s:
                    log.info("experiment %s cancelled; terminating its worker %d", eid, w.proc.pid)
                    _signal_group(w.proc.pid, signal.SIGTERM)
                    w.term_sent = now
                elif w.term_sent is not None and now - w.term_sent >= TERM_WAIT_S:
                    _signal_group(w.proc.pid, signal.SIGKILL)

    def _spawn(self, experiment_id: str) -> None:
        env = dict(os.environ)
        env.pop("WORLDSWEEP_API_TOKEN", None)  # workers never need the API secret
        env["WORLDSWEEP_STORE"] = self.settings.resolved_store()
        env["WORLDSWEEP_DB_PATH"] = str(self.db.path)
        env["WORLDSWEEP_PARENT_PID"] = str(os.getpid())
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.settings.ray_address:
            env["RAY_ADDRESS"] = env["WORLDSWEEP_RAY_ADDRESS"] = self.settings.ray_address
        else:
            env.pop("RAY_ADDRESS", None)
            env.pop("WORLDSWEEP_RAY_ADDRESS", None)
        log_path = self.log_dir / f"{experiment_id}.log"
        with open(log_path, "ab") as fh:
            fh.write(f"\n--- worker start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            fh.flush()
            proc = subprocess.Popen(worker_command(experiment_id), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.db.set_worker(experiment_id, proc.pid)
        self.workers[experiment_id] = Worker(experiment_id, proc, log_path)
        log.info("experiment %s: worker %d started", experiment_id, proc.pid)
