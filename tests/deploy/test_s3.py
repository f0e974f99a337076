"""The result store and Ray Tune's experiment storage on S3, against a real S3 API server
(moto's standalone server on loopback; see conftest.py).

- the store contract on s3:// (round trip, replace-not-duplicate, listing);
- a writer SIGKILLed while its multipart upload is in flight leaves no visible object;
- a sweep run by `worldsweep serve --store s3://…` on a Ray cluster whose nodes carry the
  S3 settings (as the deploy/ manifests configure them) writes its rows and Tune's state to
  the bucket, and the rows come back through the HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from service.spec import load_spec
from service.store import ResultStore
from tests.deploy.conftest import wait_experiment, worldsweep_server

pytestmark = pytest.mark.s3

ROOT = Path(__file__).resolve().parents[2]


def _rows(n: int, *, config_id: str = "cfg", spec_hash: str = "h", start: int = 0) -> list[dict]:
    return [
        {"world": "E1_drift_struct", "model": "gru", "hidden_dim": 4, "seed": start + i,
         "config_id": config_id, "spec_hash": spec_hash, "delta_nll": 0.1 * i, "valid": True,
         "lyap_spectrum": [0.0, -0.5]}
        for i in range(n)
    ]


def test_store_round_trip_on_s3(s3_server):
    store = ResultStore(s3_server.uri("roundtrip"))
    assert not store.is_local
    store.check_writable()
    store.write_rows("exp-a", "c1", _rows(3))
    store.write_rows("exp-a", "c2", _rows(2, start=3))
    store.write_rows("exp-a", "c1", _rows(3))  # a re-run of the same chunk replaces it
    store.write_rows("exp-b", "c1", _rows(1))

    df = store.read("exp-a")
    assert sorted(df["seed"]) == [0, 1, 2, 3, 4]
    assert df["lyap_spectrum"].map(list).tolist()[0] == [0.0, -0.5]
    assert store.done_keys("exp-a") == {("cfg", s) for s in range(5)}
    assert store.experiments() == ["exp-a", "exp-b"]
    # exactly one object per chunk, under the hive partition, nothing else left behind
    assert sorted(s3_server.keys("roundtrip/experiment=exp-a/")) == [
        "roundtrip/experiment=exp-a/part-c1.parquet", "roundtrip/experiment=exp-a/part-c2.parquet"]
    # check_writable cleaned up after itself (pyarrow may leave an empty "directory" marker)
    assert [k for k in s3_server.keys("roundtrip/_probe/") if not k.endswith("/")] == []


# Runs in a child process: writes one small chunk, then a ~20 MB one (large enough that
# pyarrow's S3 stream uploads it in parts, i.e. as a multipart upload we can observe).
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from service.store import ResultStore
    from trainers.config import RESULT_COLUMNS

    store = ResultStore(sys.argv[1])
    store.write_rows("killed", "small", [
        {"seed": s, "config_id": "c", "spec_hash": "h", "valid": True, "delta_nll": 0.5} for s in range(3)])
    n = 40_000
    rng = np.random.default_rng(0)
    cols = {k: rng.random(n).tolist() for k, t in RESULT_COLUMNS.items() if t == "float"}
    spectra = rng.random((n, 32)).tolist()
    big = [{**{k: v[i] for k, v in cols.items()}, "seed": 1000 + i, "config_id": "c",
            "spec_hash": "h", "lyap_spectrum": spectra[i]} for i in range(n)]
    print("WRITING", flush=True)
    store.write_rows("killed", "big", big)
    print("DONE", flush=True)
""")


def test_writer_killed_mid_upload_leaves_no_partial_object(s3_server, tmp_path):
    uri = s3_server.uri("killtest")
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, uri], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )
    try:
        assert child.stdout.readline().strip() == "WRITING"
        # wait until the big chunk's upload is in flight, then kill the writer mid-upload
        deadline = time.time() + 60
        uploads: list[str] = []
        while not uploads and time.time() < deadline and child.poll() is None:
            uploads = s3_server.open_multipart_uploads("killtest/")
            time.sleep(0.005)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    rest = child.stdout.read()
    assert uploads == ["killtest/experiment=killed/part-big.parquet"], "never saw the upload in flight"
    assert "DONE" not in rest and child.returncode == -signal.SIGKILL

    # the in-flight object is invisible: only the complete chunk is listed and read
    assert s3_server.keys("killtest/") == ["killtest/experiment=killed/part-small.parquet"]
    store = ResultStore(uri)
    df = store.read("killed")
    assert sorted(df["seed"]) == [0, 1, 2]
    assert store.done_keys("killed") == {("c", 0), ("c", 1), ("c", 2)}
    # the abandoned parts sit in an incomplete multipart upload, which S3 never lists as an
    # object (a bucket lifecycle rule reclaims them; deploy/README.md); clean up here
    client = s3_server.client()
    for u in client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix="killtest/").get("Uploads", []):
        client.abort_multipart_upload(Bucket=s3_server.bucket, Key=u["Key"], UploadId=u["UploadId"])


def test_store_errors_name_the_store_without_credentials(s3_server):
    """A bucket that does not exist: StoreError naming the URI, and no secret in the text."""
    from worlds.errors import StoreError

    store = ResultStore("s3://no-such-bucket-worldsweep/x")
    with pytest.raises(StoreError) as e:
        store.write_rows("e", "c", _rows(1))
    assert "s3://no-such-bucket-worldsweep/x" in str(e.value)
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in str(e.value)
    assert s3_server.env["AWS_ACCESS_KEY_ID"] not in json.dumps(store.to_config())


SWEEP_SPEC = """
name: s3-sweep
worlds: [E1_drift_struct, E1_drift_null]
models: [gru]
hidden_dims: [4]
train: {steps: 30, batch_size: 16}
data: {n_train: 64, n_eval: 32}
seeds: {count: 2}
analysis: {probe: false, lyapunov: false, coasting: false}
resources: {cpus_per_trial: 1, seeds_per_trial: 2}
"""


@pytest.mark.cluster
@pytest.mark.server
def test_sweep_with_store_and_tune_storage_on_s3(s3_server, multinode_cluster, tmp_path):
    """`worldsweep serve --store s3://…` on the two-node cluster: rows and Ray Tune's
    experiment state land in the bucket, and the rows come back over HTTP."""
    uri = s3_server.uri("sweep")
    with worldsweep_server(uri, multinode_cluster.address, tmp_path) as server:
        r = httpx.post(f"{server}/experiments", content=SWEEP_SPEC,
                       headers={"Content-Type": "application/yaml"}, timeout=30)
        assert r.status_code == 202, r.text
        experiment = r.json()["id"]
        done = wait_experiment(server, experiment)
        assert done["status"] == "succeeded", done
        body = httpx.get(f"{server}/experiments/{experiment}/results", timeout=30).json()
        assert body["count"] == 4
        rows = body["data"]
        assert sorted((row["world"], row["seed"]) for row in rows) == [
            (w, s) for w in ("E1_drift_null", "E1_drift_struct") for s in (1234, 1235)]
        assert all(row["valid"] and row["spec_hash"] == load_spec(SWEEP_SPEC).content_hash() for row in rows)
        deltas = httpx.get(f"{server}/experiments/{experiment}/delta-nll", timeout=30).json()
        assert deltas["n_seed_runs"] == 4

    # the rows are in the bucket (one object per trial chunk) and read back the same
    parts = s3_server.keys(f"sweep/experiment={experiment}/")
    assert parts and all(k.rsplit("/", 1)[1].startswith("part-") for k in parts)
    df = ResultStore(uri).read(experiment)
    assert sorted(df["seed"].tolist()) == sorted(row["seed"] for row in rows)
    # Ray Tune kept its experiment state in the bucket too, not on a node's disk
    tune_keys = s3_server.keys(f"sweep/_tune/{experiment}/")
    assert any(k.rsplit("/", 1)[1].startswith("experiment_state") for k in tune_keys), tune_keys[:20]
    # the credentials travel to no object: Tune's state (pickled trial table, configs) and
    # the result chunks never contain the secret key
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"].encode()
    client = s3_server.client()
    for key in tune_keys + parts:
        assert secret not in client.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read(), key
