"""Experiments over HTTP on a real uvicorn server and the session's real Ray: a sweep that is
killed mid-way (server and worker, SIGKILL) and resumed by a restarted server, then every
endpoint checked against the stored rows and against `stats` computed directly; cancellation.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.stats

from service.db import Database
from service.store import ResultStore
from tests.api.conftest import Server
from tests.raytools import RayCluster, ray_env

pytestmark = [pytest.mark.server, pytest.mark.ray, pytest.mark.slow]

WORLD_T = 32
ANALYSIS = {"probe": True, "lyapunov": True, "lyap_sequences": 2, "lyap_warmup": 5, "lyap_steps": 10,
            "coasting": True, "coast_cut": 10, "coast_len": 10, "halluc_cut": 10, "halluc_len": 10}


def tiny_spec(name: str, *, models: list[str], seeds: int, steps: int, members_per_trial: int) -> dict:
    return {
        "name": name,
        "worlds": [{"id": "E3_osc_struct", "params": {"T": WORLD_T}}, {"id": "E3_osc_null", "params": {"T": WORLD_T}}],
        "models": models, "hidden_dims": [4],
        "train": {"steps": steps, "batch_size": 16}, "data": {"n_train": 64, "n_eval": 32},
        "seeds": {"count": seeds}, "analysis": ANALYSIS,
        # one trial at a time (2 CPUs each on the 2-CPU session Ray), a few seed-runs per trial:
        # the sweep lands chunk by chunk, so it can be killed between chunks
        "resources": {"cpus_per_trial": 2, "seeds_per_trial": 1, "members_per_trial": members_per_trial},
    }


def wait_for(what: str, check: Callable[[], object], timeout: float, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ray_server(server_factory, ray_cluster: RayCluster) -> Server:
    return server_factory(extra_env={**ray_env(), "RAY_ADDRESS": ray_cluster.address,
                                     "WORLDSWEEP_CANCEL_GRACE_S": "3"})


def raw_rows(store_root: Path, experiment: str) -> pd.DataFrame:
    """Every row of every Parquet file of the experiment, without the store's de-duplication."""
    files = sorted((store_root / f"experiment={experiment}").glob("part-*.parquet"))
    frames = [pq.read_table(f, columns=["config_id", "seed", "written_at", "chunk_id"]).to_pandas().assign(file=f.name)
              for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["config_id", "seed"])


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_server_resumes_and_every_endpoint_matches_the_store(server_factory, ray_cluster, tmp_path,
                                                                   monkeypatch, capsys) -> None:
    server = ray_server(server_factory, ray_cluster).start()
    spec = tiny_spec("resume", models=["gru", "rnn_tanh"], seeds=3, steps=150, members_per_trial=2)
    api = server.client()
    ready = api.get("/readyz").json()
    assert ready["status"] == "ready" and ready["ray"] == {"ok": True, "detail": "Ray cluster reachable"}
    created = api.post("/experiments", json=spec).json()
    eid, total = created["id"], created["n_seed_runs"]
    assert total == 12 and created["n_trials"] == 6

    def progressed() -> dict | None:
        exp = api.get(f"/experiments/{eid}").json()
        assert exp["status"] in ("queued", "running"), exp
        return exp if 2 <= exp["progress"]["seed_runs_done"] < total else None

    wait_for("the first chunks", progressed, timeout=150)
    db = Database(server.db)
    worker_pid = db.get(eid).worker_pid
    assert worker_pid and _alive(worker_pid)
    os.killpg(server.proc.pid, signal.SIGKILL)  # the server ...
    os.kill(worker_pid, signal.SIGKILL)  # ... and its worker, mid-sweep
    server.proc.wait(timeout=10)
    wait_for("the worker to die", lambda: not _alive(worker_pid), timeout=10)
    time.sleep(1.0)  # let a chunk write racing the kill settle before the snapshot
    before = raw_rows(server.store, eid)
    assert 2 <= len(before) < total and db.get(eid).status == "running"

    server.start()  # same database and store
    api = server.client()
    done = wait_for("the resumed sweep", lambda: (e := api.get(f"/experiments/{eid}").json())["status"]
                    in ("succeeded", "failed", "cancelled") and e, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["progress"]["seed_runs_done"] + done["progress"]["seed_runs_failed"] == total

    after = raw_rows(server.store, eid)
    assert len(after) == total  # no row lost ...
    assert not after.duplicated(["config_id", "seed"]).any()  # ... or stored twice
    # nothing stored before the kill was trained again: same file, same write time
    merged = before.merge(after, on=["config_id", "seed"], suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    assert (merged["written_at_before"] == merged["written_at_after"]).all()

    check_endpoints(api, eid, ResultStore(str(server.store)).read(eid), total)

    # the CLI: the same spec again is the finished experiment; --wait prints its tables
    from service.cli import main

    monkeypatch.setenv("WORLDSWEEP_SERVER", server.url)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main(["submit", str(tmp_path / "spec.json"), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "ΔNLL per group (12 valid of 12 seed-runs)" in out and "struct − null contrasts" in out
    assert "E3_osc_struct  E3_osc_null" in out and "Lyapunov λ1 per group" in out


def check_endpoints(api: httpx.Client, eid: str, stored: pd.DataFrame, total: int) -> None:
    import stats

    # -- results: json / csv / parquet, filters
    res = api.get(f"/experiments/{eid}/results").json()
    assert res["count"] == len(stored) == total and res["status"] == "succeeded"
    got = pd.DataFrame(res["data"])
    key = ["config_id", "seed"]
    joined = stored.merge(got, on=key, suffixes=("", "_api"))
    assert len(joined) == total
    for col in ("delta_nll", "nll_model", "lyap_1", "coast_retention"):
        np.testing.assert_allclose(joined[col].astype(float), joined[f"{col}_api"].astype(float), equal_nan=True)
    assert (joined["world"] == joined["world_api"]).all() and (joined["valid"] == joined["valid_api"]).all()
    assert all(len(s) == 4 for s in got["lyap_spectrum"])  # H = 4 exponents per seed

    gru = api.get(f"/experiments/{eid}/results", params={"model": "gru"}).json()
    assert gru["count"] == (stored["model"] == "gru").sum() and {r["model"] for r in gru["data"]} == {"gru"}
    two = api.get(f"/experiments/{eid}/results",
                  params=[("world", "E3_osc_struct"), ("model", "gru"), ("seed", "1234"), ("seed", "1235")]).json()
    assert two["count"] == 2 and two["filters"] == {"world": ["E3_osc_struct"], "model": ["gru"],
                                                    "seed": ["1234", "1235"]}
    csv = pd.read_csv(io.StringIO(api.get(f"/experiments/{eid}/results", params={"format": "csv"}).text))
    assert len(csv) == total and set(csv.columns) == set(stored.columns)
    pqt = pd.read_parquet(io.BytesIO(api.get(f"/experiments/{eid}/results", params={"format": "parquet"}).content))
    pd.testing.assert_frame_equal(pqt.reset_index(drop=True), stored.reset_index(drop=True), check_dtype=False)

    valid = stored[stored["valid"]]
    # -- ΔNLL per group against stats computed directly
    dn = api.get(f"/experiments/{eid}/delta-nll").json()
    assert (dn["n_seed_runs"], dn["n_valid"], dn["partial"]) == (total, len(valid), False)
    assert len(dn["data"]) == 4  # 2 worlds x 2 models
    for row in dn["data"]:
        g = valid[(valid["world"] == row["world"]) & (valid["model"] == row["model"])]["delta_nll"].to_numpy()
        assert row["n"] == len(g) == 3 and row["n_invalid"] == 0
        assert row["mean"] == pytest.approx(g.mean()) and row["std"] == pytest.approx(g.std(ddof=1))
        assert row["p_value"] == pytest.approx(stats.sign_flip_test(g, alternative="greater").p_value)
        assert row["exact"] is True
        ci = stats.t_interval(g)
        assert row["ci95"] == pytest.approx([ci.low, ci.high])
    p = np.array([r["p_value"] for r in dn["data"]])
    assert [r["p_holm"] for r in dn["data"]] == pytest.approx(list(stats.holm(p)))

    # -- struct − null contrasts, paired by seed
    ct = api.get(f"/experiments/{eid}/contrasts").json()
    assert ct["n_seed_runs"] == total and len(ct["data"]) == 2  # one per model
    for row in ct["data"]:
        assert (row["struct_world"], row["null_world"], row["null_role"]) == ("E3_osc_struct", "E3_osc_null", "null")
        m = valid[valid["model"] == row["model"]]
        s = m[m["world"] == "E3_osc_struct"].set_index("seed")["delta_nll"]
        n = m[m["world"] == "E3_osc_null"].set_index("seed")["delta_nll"]
        diff = (s - n.reindex(s.index)).to_numpy()
        assert row["n_pairs"] == 3 and row["mean_diff"] == pytest.approx(diff.mean())
        assert row["p_value"] == pytest.approx(stats.sign_flip_test(diff, alternative="greater").p_value)
        assert row["p_two_sample"] == pytest.approx(
            stats.two_sample_permutation_test(s.to_numpy(), n.to_numpy(), "greater").p_value)
        assert row["cohen_dz"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert [r["p_holm"] for r in ct["data"]] == pytest.approx(list(stats.holm([r["p_value"] for r in ct["data"]])))

    # -- Lyapunov per group and the model comparison
    ly = api.get(f"/experiments/{eid}/lyapunov").json()
    assert ly["n_seed_runs"] == total and len(ly["data"]) == 4
    for row in ly["data"]:
        g = valid[(valid["world"] == row["world"]) & (valid["model"] == row["model"])]
        assert row["lambda1_mean"] == pytest.approx(g["lyap_1"].mean())
        assert row["gap_mean"] == pytest.approx(g["lyap_gap"].mean())
        assert sum(row["label_counts"].values()) == len(g)
    assert len(ly["comparisons"]) == 2  # gru vs rnn_tanh, on each world
    for cmp in ly["comparisons"]:
        w = valid[valid["world"] == cmp["world"]]
        a, b = (w[w["model"] == m]["lyap_1"].to_numpy() for m in (cmp["model_a"], cmp["model_b"]))
        assert (cmp["model_a"], cmp["model_b"]) == ("gru", "rnn_tanh") and (cmp["n_a"], cmp["n_b"]) == (3, 3)
        assert cmp["p_welch"] == pytest.approx(scipy.stats.ttest_ind(a, b, equal_var=False).pvalue)

    # -- dynamics
    dy = api.get(f"/experiments/{eid}/dynamics").json()
    assert dy["n_seed_runs"] == total and len(dy["data"]) == 4
    assert sum(r["n"] for r in dy["data"]) == len(valid)
    for row in dy["data"]:
        g = valid[(valid["world"] == row["world"]) & (valid["model"] == row["model"])]
        assert row["coast_retention_mean"] == pytest.approx(g["coast_retention"].mean())
        assert sum(row["coast_label_counts"].values()) == row["coast_n"] == 3


def test_cancel_resume_crash_resume(server_factory, ray_cluster) -> None:
    """Cancel keeps what was stored; re-submitting resumes; a worker that dies (SIGKILL, as an
    OOM kill or a segfault would) fails only its experiment; re-submitting resumes again."""
    server = ray_server(server_factory, ray_cluster).start()
    spec = tiny_spec("cancel", models=["gru"], seeds=6, steps=400, members_per_trial=2)
    api = server.client()
    db = Database(server.db)
    eid = api.post("/experiments", json=spec).json()["id"]

    def done() -> int:
        return api.get(f"/experiments/{eid}").json()["progress"]["seed_runs_done"]

    wait_for("a first chunk", lambda: done() >= 2, timeout=150)
    worker_pid = db.get(eid).worker_pid
    r = api.delete(f"/experiments/{eid}")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    # the worker stops by itself or is terminated after the grace period (3 s here)
    wait_for("the worker to exit", lambda: not _alive(worker_pid), timeout=30)
    stored = raw_rows(server.store, eid)
    exp = api.get(f"/experiments/{eid}").json()
    assert exp["status"] == "cancelled" and exp["finished_at"]
    assert 2 <= len(stored) < 12 and not stored.duplicated(["config_id", "seed"]).any()
    assert api.get(f"/experiments/{eid}/results").json()["count"] == len(stored)  # kept and served
    time.sleep(1)
    assert api.get(f"/experiments/{eid}").json()["status"] == "cancelled"  # nobody overwrote it

    again = api.post("/experiments", json=spec)
    assert again.status_code == 202 and again.json()["id"] == eid and again.json()["existing"]
    wait_for("more chunks", lambda: len(stored) < done() < 12, timeout=150)
    worker_pid = db.get(eid).worker_pid
    os.kill(worker_pid, signal.SIGKILL)
    failed = wait_for("the experiment to fail", lambda: (e := api.get(f"/experiments/{eid}").json())["status"]
                      == "failed" and e, timeout=30)
    assert "worker exited with code -9" in failed["error"]
    assert server.proc.poll() is None and api.get("/healthz").status_code == 200

    assert api.post("/experiments", json=spec).status_code == 202
    final = wait_for("the resumed sweep", lambda: (e := api.get(f"/experiments/{eid}").json())["status"]
                     in ("succeeded", "failed") and e, timeout=150)
    assert final["status"] == "succeeded" and final["attempts"] == 3 and final["error"] is None
    rows = raw_rows(server.store, eid)
    assert len(rows) == 12 and not rows.duplicated(["config_id", "seed"]).any()
    kept = stored.merge(rows, on=["config_id", "seed"], suffixes=("", "_final"))
    assert len(kept) == len(stored) and (kept["written_at"] == kept["written_at_final"]).all()
