"""The experiments table: ids, dedupe, queue claims, cancel and finish semantics, WAL."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from service.db import Database
from worlds.errors import ExperimentNotFound


def _create(db: Database, base: str = "exp-abc", h: str = "h1", n: int = 4):
    return db.create(base_id=base, name="exp", spec={"name": "exp"}, spec_hash=h, n_trials=2, n_seed_runs=n)


def test_wal_mode_and_roundtrip(tmp_path) -> None:
    db = Database(tmp_path / "d" / "x.db")
    assert sqlite3.connect(db.path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rec = _create(db)
    assert rec.status == "queued" and rec.spec == {"name": "exp"} and rec.seed_runs_total == 4
    assert db.get(rec.id) == rec and Database(db.path).get(rec.id) == rec  # survives re-opening
    with pytest.raises(ExperimentNotFound):
        db.get("nope")


def test_ids_get_suffixes_and_find_by_hash_returns_the_first(tmp_path) -> None:
    db = Database(tmp_path / "x.db")
    ids = [_create(db).id for _ in range(3)]
    assert ids == ["exp-abc", "exp-abc-2", "exp-abc-3"]
    assert db.find_by_hash("h1").id == "exp-abc" and db.find_by_hash("h2") is None


def test_claim_next_is_fifo_and_exclusive_across_threads(tmp_path) -> None:
    db = Database(tmp_path / "x.db")
    ids = [_create(db, base=f"e{i}", h=f"h{i}").id for i in range(12)]
    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        while (rec := Database(db.path).claim_next()) is not None:
            with lock:
                claimed.append(rec.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)  # each exactly once
    assert all(db.get(i).status == "running" and db.get(i).attempts == 1 for i in ids)


def test_claim_skips_excluded(tmp_path) -> None:
    db = Database(tmp_path / "x.db")
    a, b = _create(db, "a", "1").id, _create(db, "b", "2").id
    assert db.claim_next(exclude={a}).id == b
    assert db.claim_next(exclude={a}) is None


def test_cancel_finish_and_requeue(tmp_path) -> None:
    db = Database(tmp_path / "x.db")
    rec = _create(db)
    db.claim_next()
    assert not db.stop_requested(rec.id)
    db.update_progress(rec.id, total=4, done=2, failed=1, eta_seconds=3.5)
    cancelled = db.cancel(rec.id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested and db.stop_requested(rec.id)
    assert (cancelled.seed_runs_done, cancelled.seed_runs_failed) == (2, 1)  # progress kept
    # a worker that finishes late must not overwrite the cancellation
    assert not db.finish(rec.id, "succeeded")
    assert db.get(rec.id).status == "cancelled"
    assert db.cancel(rec.id).status == "cancelled"  # idempotent
    again = db.requeue(rec.id)
    assert again.status == "queued" and not again.cancel_requested and again.finished_at is None
    db.claim_next()
    assert db.finish(rec.id, "succeeded") and db.get(rec.id).status == "succeeded"
    assert db.cancel(rec.id).status == "succeeded"  # finished experiments stay finished
    assert db.count() == 1 and db.count("succeeded") == 1 and db.list("queued") == []


def test_submit_dedupes_atomically_and_requeues_finished_failures(tmp_path) -> None:
    db = Database(tmp_path / "x.db")
    results: list[tuple] = []
    lock = threading.Lock()

    def submit() -> None:
        out = Database(db.path).submit(base_id="same", name="same", spec={}, spec_hash="H",
                                       n_trials=1, n_seed_runs=2)
        with lock:
            results.append(out)

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.count() == 1  # six concurrent identical submissions, one experiment
    assert sorted((r[1], r[2]) for r in results) == [(False, True)] + [(True, False)] * 5
    db.claim_next()
    db.finish("same", "failed", error="boom")
    rec, existing, queued = db.submit(base_id="same", name="same", spec={}, spec_hash="H", n_trials=1, n_seed_runs=2)
    assert (rec.id, rec.status, rec.error, existing, queued) == ("same", "queued", None, True, True)
    forced, existing, queued = db.submit(base_id="same", name="same", spec={}, spec_hash="H", n_trials=1,
                                         n_seed_runs=2, force=True)
    assert (forced.id, existing, queued) == ("same-2", False, True)
