"""The Ray Tune driver on a real local Ray (the session's `ray start --head`, 2 CPUs).

Every Tuner.fit costs seconds, so each test checks several things per run; configurations
are tiny (a few steps, tens of sequences)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service import driver
from service.driver import MAX_FAILURES, Progress, run_experiment
from service.spec import config_id, load_spec
from service.store import COLUMNS, DRIVER_COLUMNS, ResultStore
from service.sweep import grid_members

pytestmark = pytest.mark.ray

TINY = {
    "train": {"steps": 20, "batch_size": 8},
    "hidden_dims": [2],
    "data": {"n_train": 24, "n_eval": 8},
    "analysis": {"lyap_sequences": 2, "lyap_warmup": 5, "lyap_steps": 10, "coast_cut": 10,
                 "coast_len": 10, "halluc_cut": 10, "halluc_len": 10},
}
SHORT_E2 = [{"id": "E2_regime_struct", "params": {"T": 32, "period": 8}}, {"id": "E2_regime_null", "params": {"T": 32}}]


def tiny(name: str, **changes) -> dict:
    return {"name": name, "worlds": SHORT_E2, "models": ["rnn_tanh"], **TINY, **changes}


def parts(store: ResultStore, experiment: str) -> int:
    """Rows in all chunk files, before de-duplication."""
    import pyarrow.parquet as pq

    root = Path(store.root) / f"experiment={experiment}"
    return sum(pq.read_table(p).num_rows for p in root.glob("part-*.parquet"))


def test_run_interrupt_resume_and_rerun(ray_address: str, tmp_path: Path) -> None:
    # 300 steps: trials long enough (about a second) for the stop to land between them
    spec = load_spec(tiny("resume", seeds={"count": 3}, train={"steps": 300, "batch_size": 8},
                          resources={"seeds_per_trial": 1, "members_per_trial": 1}))
    store = ResultStore(tmp_path / "store")
    assert spec.n_trials == 6 and spec.n_seed_runs == 6
    seen: list[Progress] = []

    # 1. stop as soon as the first trial has stored its row
    first = run_experiment(spec, "resume", store, progress=seen.append,
                           should_stop=lambda: len(store.done_keys("resume")) >= 1)
    assert first.cancelled
    # A trial that was finishing when the stop came may still store its chunk (whole, or
    # not at all) just after fit returns: wait until the store is quiet.
    count, quiet_since = -1, time.monotonic()
    while time.monotonic() - quiet_since < 3:
        now = len(store.done_keys("resume"))
        if now != count:
            count, quiet_since = now, time.monotonic()
        time.sleep(0.2)
    stored = store.read("resume")
    assert 1 <= len(stored) < 6 == first.seed_runs_total
    assert 1 <= first.seed_runs_done <= len(stored) and first.seed_runs_skipped == 0
    assert seen[0].seed_runs_total == 6 and all(p.seed_runs_failed == 0 for p in seen)
    before = dict(zip(zip(stored.config_id, stored.seed, strict=True), stored.trial_id, strict=True))

    # 2. resume: trains only what is missing (the stored rows keep their trial ids)
    second = run_experiment(spec, "resume", store, progress=seen.append)
    assert not second.cancelled
    assert second.seed_runs_skipped == len(before)
    assert second.seed_runs_trained == 6 - len(before) == second.trials
    df = store.read("resume")
    assert len(df) == 6 == parts(store, "resume")
    for (cid, seed), trial in before.items():
        assert df[(df.config_id == cid) & (df.seed == seed)].trial_id.item() == trial
    assert seen[-1].seed_runs_done == 6 and seen[-1].eta_seconds == 0.0

    # rows = configurations x seeds, every documented column, filled by the driver
    assert list(df.columns) == list(COLUMNS)
    assert {(c, s) for c, s in zip(df.config_id, df.seed, strict=True)} == {
        (config_id(c), s) for c, s in grid_members(spec)}
    assert df.valid.all() and (df.invalid_reason == "").all()
    assert set(df.world) == {"E2_regime_struct", "E2_regime_null"} and set(df.seed) == {1234, 1235, 1236}
    assert (df.experiment == "resume").all() and (df.spec_hash == spec.content_hash()).all()
    assert (df.search_sample == -1).all()
    for col in ("trial_id", "node_id", "hostname"):
        assert (df[col].str.len() > 0).all(), col
    assert df.trial_id.nunique() == 6  # one trial per seed-run with members_per_trial 1
    assert set(DRIVER_COLUMNS) <= set(df.columns)
    assert df.lyap_spectrum.map(len).eq(2).all()

    # 3. the same spec again: nothing trained, no duplicates
    third = run_experiment(spec, "resume", store)
    assert third.trials == 0 and third.seed_runs_trained == 0 and third.seed_runs_skipped == 6
    assert parts(store, "resume") == 6 and len(store.read("resume")) == 6


def test_failing_trial_is_recorded_as_invalid_rows(ray_address: str, tmp_path: Path) -> None:
    # The trainer rejects the Markov baseline on a non-binary world when the trial runs.
    spec = load_spec(tiny("fails", worlds=[{"id": "E3_osc_struct", "params": {"T": 32}}],
                          data={"n_train": 24, "n_eval": 8, "baseline": "markov"}, seeds={"count": 2}))
    store = ResultStore(tmp_path / "store")
    seen: list[Progress] = []
    summary = run_experiment(spec, "fails", store, progress=seen.append)
    assert summary.trials_failed == 1 and summary.seed_runs_failed == 2 and summary.seed_runs_done == 0
    assert seen[-1].seed_runs_failed == 2
    df = store.read("fails")
    assert len(df) == 2 and not df.valid.any()
    for reason in df.invalid_reason:
        assert f"after {MAX_FAILURES + 1} attempts" in reason
        assert "markov needs a binary world" in reason
    assert set(df.seed) == {1234, 1235} and (df.world == "E3_osc_struct").all()
    assert (df.baseline_kind == "markov").all() and (df.seq_len == 32).all()
    # a failed seed-run counts as stored: re-running does not retry it
    again = run_experiment(spec, "fails", store)
    assert again.trials == 0 and len(store.read("fails")) == 2


def test_in_trial_progress_moves_the_eta(ray_address: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # one trial of 2 seed-runs; heartbeats every 50 ms (the interval travels in the trial's ctx)
    monkeypatch.setattr(driver, "HEARTBEAT_SECONDS", 0.05)
    spec = load_spec(tiny("beats", worlds=SHORT_E2[:1], seeds={"count": 2},
                          train={"steps": 1500, "batch_size": 8}))
    store = ResultStore(tmp_path / "store")
    seen: list[Progress] = []
    summary = run_experiment(spec, "beats", store, progress=seen.append)
    assert summary.trials == 1 and summary.seed_runs_done == 2 and summary.seed_runs_failed == 0
    during = [p for p in seen if p.train_fraction is not None]
    assert during, seen
    assert any(0 < p.train_fraction < 1 and p.eta_seconds is not None  # type: ignore[operator]
               and p.seed_runs_done == 0 and p.seed_runs_training == 2 for p in during)
    fractions = [p.train_fraction for p in during]
    assert fractions == sorted(fractions)  # type: ignore[type-var]
    # the final report still counts the rows; nothing is training at the end
    last = seen[-1]
    assert last.seed_runs_done == 2 and last.eta_seconds == 0.0
    assert last.train_fraction is None and last.seed_runs_training == 0
    assert len(store.read("beats")) == 2 == parts(store, "beats")


def test_optuna_search_records_samples(ray_address: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # a heartbeat at every progress call: the searcher must ignore them (objective=NaN)
    monkeypatch.setattr(driver, "HEARTBEAT_SECONDS", 0.0)
    spec = load_spec(tiny("search", worlds=SHORT_E2[:1], seeds={"count": 2},
                          search={"metric": "delta_nll", "mode": "max", "num_samples": 3,
                                  "sampler_seed": 7,
                                  "space": {"lr": {"log_uniform": [1e-3, 3e-2]}}}))
    store = ResultStore(tmp_path / "store")
    seen: list[Progress] = []
    summary = run_experiment(spec, "search", store, progress=seen.append)
    assert any(p.train_fraction is not None for p in seen)
    assert summary.trials == 3 and summary.seed_runs_done + summary.seed_runs_failed == 6
    df = store.read("search")
    assert len(df) == 6 and sorted(set(df.search_sample)) == [0, 1, 2]
    by_sample = df.groupby("search_sample")
    assert (by_sample.size() == 2).all()
    assert (by_sample.lr.nunique() == 1).all() and df.lr.nunique() == 3  # one lr per sample
    assert df.lr.between(1e-3, 3e-2).all()
    assert (by_sample.trial_id.nunique() == 1).all()
    # resuming a finished search trains nothing
    again = run_experiment(spec, "search", store)
    assert again.trials == 0 and len(store.read("search")) == 6
