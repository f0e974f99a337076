"""Experiment state that survives server restarts: one SQLite file in WAL mode.

The server process (routes, supervisor) and the worker processes all open the same file;
WAL lets readers proceed while a worker writes progress. Every call opens its own short
connection, so the object is safe to share between threads and cheap to re-create in a
worker process.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worlds.errors import ExperimentNotFound

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    spec             TEXT NOT NULL,          -- the validated spec as JSON
    spec_hash        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
    n_trials         INTEGER NOT NULL,
    n_seed_runs      INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    error            TEXT,
    seed_runs_total  INTEGER NOT NULL DEFAULT 0,
    seed_runs_done   INTEGER NOT NULL DEFAULT 0,
    seed_runs_failed INTEGER NOT NULL DEFAULT 0,
    eta_seconds      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_pid       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0  -- how many times a worker was started
);
CREATE INDEX IF NOT EXISTS experiments_hash ON experiments (spec_hash, created_at);
CREATE INDEX IF NOT EXISTS experiments_status ON experiments (status, created_at);
"""


_REQUEUE = ("UPDATE experiments SET status = 'queued', cancel_requested = 0, error = NULL,"
            " finished_at = NULL, worker_pid = NULL, updated_at = ? WHERE id = ?")


@dataclass(frozen=True)
class ExperimentRecord:
    id: str
    name: str
    spec: dict[str, Any]
    spec_hash: str
    status: str
    n_trials: int
    n_seed_runs: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    seed_runs_total: int
    seed_runs_done: int
    seed_runs_failed: int
    eta_seconds: float | None
    cancel_requested: bool
    worker_pid: int | None
    attempts: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ExperimentRecord:
        d = dict(row)
        d["spec"] = json.loads(d["spec"])
        d["cancel_requested"] = bool(d["cancel_requested"])
        return cls(**d)


class Database:
    """The experiments table. All writes are single statements or short transactions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: autocommit; explicit BEGIN IMMEDIATE where we read-then-write
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL; commits stay cheap
            yield con
        finally:
            con.close()

    # -- reads -------------------------------------------------------------------------
    def get(self, experiment_id: str) -> ExperimentRecord:
        with self._connect() as con:
            row = con.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        if row is None:
            raise ExperimentNotFound(experiment_id)
        return ExperimentRecord.from_row(row)

    def exists(self, experiment_id: str) -> bool:
        with self._connect() as con:
            return con.execute("SELECT 1 FROM experiments WHERE id = ?", (experiment_id,)).fetchone() is not None

    def list(self, status: str | None = None, limit: int | None = None, offset: int = 0) -> list[ExperimentRecord]:
        sql = "SELECT * FROM experiments"
        args: list[str | int] = []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self._connect() as con:
            return [ExperimentRecord.from_row(r) for r in con.execute(sql, args)]

    def count(self, status: str | None = None) -> int:
        with self._connect() as con:
            if status is None:
                return con.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
            return con.execute("SELECT COUNT(*) FROM experiments WHERE status = ?", (status,)).fetchone()[0]

    def find_by_hash(self, spec_hash: str) -> ExperimentRecord | None:
        """The first experiment submitted with this spec (forced duplicates come later)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT * FROM experiments WHERE spec_hash = ? ORDER BY created_at, id LIMIT 1", (spec_hash,)
            ).fetchone()
        return ExperimentRecord.from_row(row) if row else None

    # -- writes ------------------------------------------------------------------------
    def create(self, *, base_id: str, name: str, spec: dict[str, Any], spec_hash: str,
               n_trials: int, n_seed_runs: int) -> ExperimentRecord:
        """Insert a queued experiment under `base_id`, or `base_id-2`, `-3`, ... if taken."""
        rec, _, _ = self.submit(base_id=base_id, name=name, spec=spec, spec_hash=spec_hash,
                                n_trials=n_trials, n_seed_runs=n_seed_runs, force=True)
        return rec

    def submit(self, *, base_id: str, name: str, spec: dict[str, Any], spec_hash: str,
               n_trials: int, n_seed_runs: int, force: bool = False) -> tuple[ExperimentRecord, bool, bool]:
        """Queue a spec, in one transaction (two identical submissions cannot race).

        Unless `force`, an experiment with the same spec hash is returned instead; if it had
        failed or been cancelled it is re-queued (its stored seed-runs are kept and skipped).
        Returns (record, existing, queued_now).
        """
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            if not force:
                row = con.execute("SELECT id, status FROM experiments WHERE spec_hash = ?"
                                  " ORDER BY created_at, id LIMIT 1", (spec_hash,)).fetchone()
                if row is not None:
                    requeue = row[1] in ("failed", "cancelled")
                    if requeue:
                        con.execute(_REQUEUE, (now, row[0]))
                    con.execute("COMMIT")
                    return self.get(row[0]), True, requeue
            taken = {r[0] for r in con.execute(
                "SELECT id FROM experiments WHERE id = ? OR id LIKE ?", (base_id, base_id + "-%"))}
            new_id, k = base_id, 1
            while new_id in taken:
                k += 1
                new_id = f"{base_id}-{k}"
            con.execute(
                "INSERT INTO experiments (id, name, spec, spec_hash, status, n_trials, n_seed_runs,"
                " created_at, updated_at, seed_runs_total) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (new_id, name, json.dumps(spec, sort_keys=True), spec_hash, n_trials, n_seed_runs,
                 now, now, n_seed_runs),
            )
            con.execute("COMMIT")
        return self.get(new_id), False, True

    def requeue(self, experiment_id: str) -> ExperimentRecord:
        """Put a finished (failed / cancelled) or interrupted experiment back in the queue."""
        with self._connect() as con:
            con.execute(_REQUEUE, (time.time(), experiment_id))
        return self.get(experiment_id)

    def claim_next(self, exclude: Set[str] = frozenset()) -> ExperimentRecord | None:
        """Atomically move the oldest queued experiment to `running` and return it."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            rows = con.execute(
                "SELECT id FROM experiments WHERE status = 'queued' ORDER BY created_at, id").fetchall()
            chosen = next((r[0] for r in rows if r[0] not in exclude), None)
            if chosen is None:
                con.execute("COMMIT")
                return None
            now = time.time()
            con.execute(
                "UPDATE experiments SET status = 'running', started_at = COALESCE(started_at, ?),"
                " updated_at = ?, attempts = attempts + 1, error = NULL WHERE id = ?",
                (now, now, chosen),
            )
            con.execute("COMMIT")
        return self.get(chosen)

    def set_worker(self, experiment_id: str, pid: int | None) -> None:
        with self._connect() as con:
            con.execute("UPDATE experiments SET worker_pid = ?, updated_at = ? WHERE id = ?",
                        (pid, time.time(), experiment_id))

    def update_progress(self, experiment_id: str, *, total: int, done: int, failed: int,
                        eta_seconds: float | None) -> None:
        with self._connect() as con:
            con.execute(
                "UPDATE experiments SET seed_runs_total = ?, seed_runs_done = ?, seed_runs_failed = ?,"
                " eta_seconds = ?, updated_at = ? WHERE id = ?",
                (int(total), int(done), int(failed), eta_seconds, time.time(), experiment_id),
            )

    def finish(self, experiment_id: str, status: str, error: str | None = None,
               only_if: tuple[str, ...] = ("running",)) -> bool:
        """Set a final status unless the experiment has meanwhile moved on (e.g. was cancelled).

        Returns whether the row was changed.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        now = time.time()
        marks = ",".join("?" * len(only_if))
        with self._connect() as con:
            cur = con.execute(
                f"UPDATE experiments SET status = ?, error = ?, finished_at = ?, updated_at = ?,"
                f" eta_seconds = CASE WHEN ? = 'succeeded' THEN 0 ELSE eta_seconds END"
                f" WHERE id = ? AND status IN ({marks})",
                (status, error, now, now, status, experiment_id, *only_if),
            )
            return cur.rowcount > 0

    def cancel(self, experiment_id: str) -> ExperimentRecord:
        """Cancel a queued or running experiment (a no-op on finished ones); the worker, if any,
        sees `cancel_requested` and stops, and the supervisor terminates it if it does not."""
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT status FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
            if row is None:
                con.execute("COMMIT")
                raise ExperimentNotFound(experiment_id)
            if row[0] in ACTIVE:
                con.execute(
                    "UPDATE experiments SET status = 'cancelled', cancel_requested = 1, finished_at = ?,"
                    " updated_at = ?, eta_seconds = NULL WHERE id = ?",
                    (now, now, experiment_id),
                )
            con.execute("COMMIT")
        return self.get(experiment_id)

    def stop_requested(self, experiment_id: str) -> bool:
        """Whether a running worker should stop: cancelled, deleted, or no longer `running`."""
        with self._connect() as con:
            row = con.execute("SELECT cancel_requested, status FROM experiments WHERE id = ?",
                              (experiment_id,)).fetchone()
        return row is None or bool(row[0]) or row[1] != "running"
