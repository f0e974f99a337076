"""worldsweep on a real multi-node Ray cluster (marker `cluster`).

A head (`ray start --head`, 1 CPU) and a second node (`ray start --address …`, 1 CPU and a
custom resource `worker_b`) are started with token authentication on, the way
deploy/README.md describes for an existing cluster. A small spec of four one-seed trials
(1 CPU each) then runs through `worldsweep run --ray-address …` and through `worldsweep serve
--ray-address …` over HTTP; with one CPU per node, trials have to use both nodes, and the
rows' node_id column shows they did. The cluster (tests/deploy/conftest.py) is separate
from the session's Ray, and only its own processes are stopped.

On one machine every node shares the host's IP address, so a local store path is one disk
and is allowed; the refusal of node-local paths on clusters that span machines is tested
as a pure function with node tables of the shape `ray.nodes()` returns.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from service.spec import load_spec
from service.store import ResultStore
from tests.deploy.conftest import WORLDSWEEP, cli_env, wait_experiment, worldsweep_server
from worlds.errors import ClusterError, SpecError, StoreError

# Four one-seed trials of 1 CPU each. 3000 steps (~1 s of training each) keep the trials
# long enough that the second node's placement group is ready before Tune's reused actor on
# the first node has drained the queue (with a few ms per trial, one node could run them all).
SPREAD_SPEC = """
name: cluster-spread
worlds: [E1_drift_struct]
models: [gru]
hidden_dims: [4]
train: {steps: 3000, batch_size: 16}
data: {n_train: 64, n_eval: 32}
seeds: {count: 4}
analysis: {probe: false, lyapunov: false, coasting: false}
resources: {cpus_per_trial: 1, seeds_per_trial: 1, members_per_trial: 1}
"""
GPU_SPEC = SPREAD_SPEC.replace("cluster-spread", "cluster-gpu").replace(
    "cpus_per_trial: 1,", "cpus_per_trial: 1, gpus_per_trial: 0.25,")


# ---------------------------------------------------------------- pure checks (no Ray)


def _node(ip: str, cpus: float = 1, gpus: float = 0, alive: bool = True) -> dict:
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return {"NodeID": f"{ip}-{cpus}-{gpus}", "Alive": alive, "NodeManagerAddress": ip,
            "Resources": resources}


def test_fractional_gpu_spec_is_valid():
    spec = load_spec(GPU_SPEC)
    assert spec.resources.gpus_per_trial == 0.25
    with pytest.raises(SpecError) as e:
        load_spec(GPU_SPEC.replace("gpus_per_trial: 0.25", "gpus_per_trial: 1.5"))
    assert "resources.gpus_per_trial" in str(e.value)


def test_store_locality_rule():
    from service.driver import check_cluster_fit

    spec = load_spec(SPREAD_SPEC)
    # an s3 store with an explicit endpoint is built without contacting it
    local, shared = ResultStore("/tmp/ws-local-store"), ResultStore("s3://bucket/prefix", s3_endpoint="http://127.0.0.1:9")
    one_machine = [_node("10.0.0.5"), _node("10.0.0.5"), _node("10.0.0.5", alive=False)]
    two_machines = [_node("10.0.0.5"), _node("10.0.0.6")]
    check_cluster_fit(spec, local, one_machine)  # several nodes, one host: one disk
    check_cluster_fit(spec, shared, two_machines)
    check_cluster_fit(spec, local, [_node("10.0.0.5"), _node("10.0.0.6", alive=False)])  # dead nodes don't count
    with pytest.raises(StoreError) as e:
        check_cluster_fit(spec, local, two_machines)
    msg = str(e.value)
    assert "/tmp/ws-local-store" in msg and "2 machines" in msg and "s3://" in msg
    # one machine now, but an autoscaler that adds machines: the path would not be shared
    with pytest.raises(StoreError, match="autoscaler"):
        check_cluster_fit(spec, local, one_machine, autoscaler_node_types=[{"CPU": 8, "GPU": 1}])
    # a filesystem the operator declares shared (NFS mounted everywhere) is accepted
    check_cluster_fit(spec, local, two_machines, shared_fs=True)


def test_gpu_rule():
    from service.driver import check_cluster_fit

    gpu_spec, store = load_spec(GPU_SPEC), ResultStore("s3://bucket/prefix", s3_endpoint="http://127.0.0.1:9")
    check_cluster_fit(gpu_spec, store, [_node("10.0.0.5", gpus=1)])
    with pytest.raises(ClusterError) as e:
        check_cluster_fit(gpu_spec, store, [_node("10.0.0.5"), _node("10.0.0.6")])
    assert "gpus_per_trial" in str(e.value) and "no GPUs" in str(e.value)
    # an autoscaling cluster whose GPU group is scaled to zero: GPUs can still come
    check_cluster_fit(gpu_spec, store, [_node("10.0.0.5")], autoscaler_node_types=[{"CPU": 8, "GPU": 1}])
    with pytest.raises(ClusterError):
        check_cluster_fit(gpu_spec, store, [_node("10.0.0.5")], autoscaler_node_types=[{"CPU": 8}])
    too_many = load_spec(GPU_SPEC.replace("gpus_per_trial: 0.25", "gpus_per_trial: 2"))
    with pytest.raises(ClusterError) as e:
        check_cluster_fit(too_many, store, [_node("10.0.0.5", gpus=1), _node("10.0.0.6", gpus=1)])
    assert "gpus_per_trial=2" in str(e.value)


def test_declared_autoscaler_node_types(monkeypatch):
    from service import driver

    monkeypatch.setenv("WORLDSWEEP_AUTOSCALER_NODE_TYPES", '[{"CPU": 8, "GPU": 1}, {"CPU": 4}]')
    assert driver._autoscaler_node_types() == [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 4.0}]
    monkeypatch.setenv("WORLDSWEEP_AUTOSCALER_NODE_TYPES", '{"CPU": 8}')
    with pytest.raises(ClusterError, match="WORLDSWEEP_AUTOSCALER_NODE_TYPES"):
        driver._autoscaler_node_types()


# ---------------------------------------------------------------- a real two-node cluster


def _cluster_nodes(address: str) -> list[dict]:
    """The alive nodes as the cluster reports them (asked from a subprocess: this test
    process may already be connected to the session's Ray)."""
    code = ("import json, ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
            "print(json.dumps([{'id': n['NodeID'], 'ip': n['NodeManagerAddress'], "
            "'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))")
    out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                         env=cli_env(), timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.cluster
def test_worldsweep_run_uses_every_node(multinode_cluster, tmp_path):
    nodes = _cluster_nodes(multinode_cluster.address)
    assert len(nodes) == 2 and sum("worker_b" in n["resources"] for n in nodes) == 1
    spec_file = tmp_path / "spread.yaml"
    spec_file.write_text(SPREAD_SPEC)
    store_dir = tmp_path / "store"
    proc = subprocess.run(
        [WORLDSWEEP, "run", str(spec_file), "--store", str(store_dir),
         "--ray-address", multinode_cluster.address, "--json"],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=300,
    )
    df = ResultStore(str(store_dir)).read(load_spec(SPREAD_SPEC).experiment_id())
    assert len(df) == 4 and df["valid"].all(), proc.stderr[-3000:]
    # every trial ran on a node of this cluster, and both nodes ran trials
    assert set(df["node_id"]) == {n["id"] for n in nodes}
    assert df["hostname"].nunique() == 1  # one machine: the node id tells the nodes apart
    assert (df["device"].str.startswith("cpu")).all()
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)["summary"]
    assert summary["seed_runs_done"] == 4 and summary["trials"] == 4


@pytest.mark.cluster
def test_gpu_spec_on_cluster_without_gpus_fails_clearly(multinode_cluster, tmp_path):
    spec_file = tmp_path / "gpu.yaml"
    spec_file.write_text(GPU_SPEC)
    proc = subprocess.run(
        [WORLDSWEEP, "run", str(spec_file), "--store", str(tmp_path / "store"),
         "--ray-address", multinode_cluster.address],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "gpus_per_trial" in proc.stderr and "no GPUs" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not ResultStore(str(tmp_path / "store")).experiments()  # nothing was scheduled


@pytest.mark.cluster
@pytest.mark.server
def test_server_runs_experiments_on_every_node(multinode_cluster, tmp_path):
    nodes = _cluster_nodes(multinode_cluster.address)
    with worldsweep_server(str(tmp_path / "store"), multinode_cluster.address, tmp_path) as server:
        yaml_headers = {"Content-Type": "application/yaml"}
        r = httpx.post(f"{server}/experiments", content=SPREAD_SPEC, headers=yaml_headers, timeout=30)
        assert r.status_code == 202, r.text
        spread = r.json()["id"]
        r = httpx.post(f"{server}/experiments", content=GPU_SPEC, headers=yaml_headers, timeout=30)
        assert r.status_code == 202, r.text
        gpu = r.json()["id"]

        done = wait_experiment(server, spread)
        assert done["status"] == "succeeded", done
        rows = httpx.get(f"{server}/experiments/{spread}/results", timeout=30).json()
        assert rows["count"] == 4
        assert {row["node_id"] for row in rows["data"]} == {n["id"] for n in nodes}
        assert all(row["valid"] for row in rows["data"])

        # the fractional-GPU spec is refused by the cluster check with a clear message
        failed = wait_experiment(server, gpu)
        assert failed["status"] == "failed"
        assert "no GPUs" in failed["error"] and "gpus_per_trial" in failed["error"]
        assert "Traceback" not in failed["error"]
