"""`worldsweep run` and `worldsweep results` as a user runs them: subprocesses joining the
session's Ray through RAY_ADDRESS (with its auth token in the environment)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.raytools import RayCluster, ray_env
from tests.service.test_driver import SHORT_E2, TINY

pytestmark = pytest.mark.ray
ROOT = Path(__file__).parents[2]


def worldsweep(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def test_run_then_results(ray_cluster: RayCluster, tmp_path: Path) -> None:
    spec = {"name": "cli", "worlds": SHORT_E2, "models": ["rnn_tanh"], **TINY, "seeds": {"count": 2}}
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster.address, "WORLDSWEEP_STORE": str(tmp_path / "store")}

    run = worldsweep("run", str(path), "--json", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    experiment = out["experiment"]
    assert experiment.startswith("cli-") and len(experiment) == len("cli-") + 10
    assert out["summary"]["seed_runs_total"] == 4 == out["summary"]["seed_runs_done"]
    assert len(out["delta_nll"]["data"]) == 2 and out["delta_nll"]["n_valid"] == 4
    assert {r["world"] for r in out["delta_nll"]["data"]} == {"E2_regime_struct", "E2_regime_null"}
    assert len(out["contrasts"]["data"]) == 1
    assert "seed-run" in run.stderr  # the progress bar

    # the same spec again resumes: nothing trained; plain table output
    again = worldsweep("run", str(path), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 already stored" in again.stdout
    assert "ΔNLL per group" in again.stdout and "E2_regime_struct" in again.stdout
    assert "contrasts" in again.stdout

    as_json = worldsweep("results", experiment, "--format", "json", env=env)
    rows = json.loads(as_json.stdout)
    assert len(rows) == 4 and all(r["valid"] for r in rows)
    assert all(isinstance(r["lyap_spectrum"], list) for r in rows)
    as_csv = worldsweep("results", experiment, "--format", "csv", env=env)
    df = pd.read_csv(io.StringIO(as_csv.stdout))
    assert len(df) == 4 and set(df.seed) == {1234, 1235}
    assert df.delta_nll.tolist() == pytest.approx([r["delta_nll"] for r in rows])
    out_file = tmp_path / "rows.parquet"
    assert worldsweep("results", experiment, "--format", "parquet", "--out", str(out_file), env=env).returncode == 0
    assert len(pd.read_parquet(out_file)) == 4
    table = worldsweep("results", experiment, env=env)
    assert table.returncode == 0 and "ΔNLL per group" in table.stdout

    missing = worldsweep("results", "no-such-experiment", env=env)
    assert missing.returncode == 2 and "no-such-experiment" in missing.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**spec, "hidden_dims": [0]}))
    rejected = worldsweep("run", str(bad), env=env)
    assert rejected.returncode == 2
    assert rejected.stderr.strip().splitlines()[-1] == (
        "worldsweep run: error: `hidden_dims[0]`: must be between 1 and 256, got 0")
