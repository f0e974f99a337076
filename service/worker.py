"""Worker process: runs one experiment's driver. `python -m service.worker <experiment-id>`.

Started by the server's supervisor (service.runner) with WORLDSWEEP_DB_PATH, WORLDSWEEP_STORE
and RAY_ADDRESS in its environment. It loads the validated spec from the database, runs
`service.driver.run_experiment`, writes progress to the database as it goes, and records how
the experiment ended. It stops early (the driver finishes what it must and returns) when the
experiment is cancelled, when it receives SIGTERM (server shutdown) or when the server dies.

Exit codes: 0 the experiment ended as recorded (or was left `running` to resume later),
1 the driver raised (recorded as `failed`), 2 bad invocation.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from typing import Any

from service.db import Database
from service.settings import Settings

log = logging.getLogger("worldsweep.worker")

PROGRESS_EVERY_S = 0.25  # progress writes are cheap, but not free on a slow disk
STOP_CHECK_EVERY_S = 0.5


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the server dies, so an orphan never trains on alone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class _Controls:
    """Progress sink and stop flag handed to the driver."""

    def __init__(self, db: Database, experiment_id: str, parent_pid: int | None) -> None:
        self.db = db
        self.experiment_id = experiment_id
        self.parent_pid = parent_pid
        self.signalled = False
        self.last: Any = None
        self._last_write = 0.0
        self._last_check = 0.0
        self._stop = False

    def on_signal(self, signum: int, frame: object) -> None:
        self.signalled = True

    def progress(self, p: Any) -> None:
        self.last = p
        now = time.monotonic()
        finished = p.seed_runs_done + p.seed_runs_failed >= p.seed_runs_total
        if finished or now - self._last_write >= PROGRESS_EVERY_S:
            self._last_write = now
            self.flush()

    def flush(self) -> None:
        p = self.last
        if p is not None:
            eta = p.eta_seconds
            self.db.update_progress(self.experiment_id, total=p.seed_runs_total, done=p.seed_runs_done,
                                    failed=p.seed_runs_failed,
                                    eta_seconds=None if eta is None or eta != eta else float(eta))

    def orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def should_stop(self) -> bool:
        if self.signalled or self.orphaned():
            return True
        now = time.monotonic()
        if not self._stop and now - self._last_check >= STOP_CHECK_EVERY_S:
            self._last_check = now
            self._stop = self.db.stop_requested(self.experiment_id)
        return self._stop

    def complete(self) -> bool:
        p = self.last
        return p is not None and p.seed_runs_done + p.seed_runs_failed >= p.seed_runs_total


def run(experiment_id: str, settings: Settings | None = None) -> int:
    settings = settings or Settings()
    db = Database(settings.resolved_db_path())
    rec = db.get(experiment_id)
    if rec.status != "running":  # cancelled between claim and start
        log.info("experiment %s is %s; nothing to do", experiment_id, rec.status)
        return 0
    parent = os.environ.get("WORLDSWEEP_PARENT_PID")
    parent_pid = int(parent) if parent and parent.isdigit() else None
    _die_with_parent()
    controls = _Controls(db, experiment_id, parent_pid)
    if controls.orphaned():  # the server died before prctl took effect
        return 0
    signal.signal(signal.SIGTERM, controls.on_signal)
    db.set_worker(experiment_id, os.getpid())

    try:
        from service.driver import run_experiment
        from service.spec import load_spec
        from service.store import ResultStore

        spec = load_spec(rec.spec)
        store = ResultStore(settings.resolved_store())
        summary = run_experiment(spec, experiment_id, store, ray_address=settings.ray_address,
                                 progress=controls.progress, should_stop=controls.should_stop)
    except Exception as e:
        traceback.print_exc()
        controls.flush()
        db.finish(experiment_id, "failed", error=f"{type(e).__name__}: {e}")
        return 1
    controls.flush()
    log.info("experiment %s: driver returned %r", experiment_id, summary)
    complete = _summary_complete(summary, controls)
    if db.stop_requested(experiment_id) and not complete:
        return 0  # cancelled (already recorded) or requeued meanwhile
    if not complete and (controls.signalled or controls.orphaned()):
        return 0  # server shutting down: stays `running`, resumed at the next start
    if not complete:
        db.finish(experiment_id, "failed", error="the driver stopped before every seed-run was done")
        return 1
    db.finish(experiment_id, "succeeded")
    return 0


def _summary_complete(summary: Any, controls: _Controls) -> bool:
    """Every seed-run of the experiment is stored (valid or recorded as failed)."""
    try:
        return summary.seed_runs_done + summary.seed_runs_failed >= summary.seed_runs_total
    except AttributeError:
        return controls.complete()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m service.worker EXPERIMENT_ID", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main())
