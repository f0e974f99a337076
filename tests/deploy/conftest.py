"""Fixtures of the deployment tests: a real S3 API (moto's standalone server) on a free
loopback port, and helpers to run the worldsweep CLI and server as subprocesses.

The moto server is a separate process speaking the S3 HTTP API, so pyarrow, Ray Tune and
boto3 talk to it exactly as they would to AWS or MinIO; only the endpoint differs
(AWS_ENDPOINT_URL). Credentials are dummies. We stop only the process we started.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.raytools import RayCluster, free_port, ray_env, start_head

ROOT = Path(__file__).resolve().parents[2]
WORLDSWEEP = str(Path(sys.executable).with_name("worldsweep"))

MOTO_SERVER = Path(sys.executable).with_name("moto_server")


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    env: dict[str, str]  # what a client process needs to reach it

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def open_multipart_uploads(self, prefix: str = "") -> list[str]:
        r = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [u["Key"] for u in r.get("Uploads", [])]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM then SIGKILL the process group of a process we started with
    start_new_session=True (so its children go too), and nothing else."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A moto S3 server with one empty bucket; this process's environment points at it for
    the session (pyarrow and boto3 read AWS_* variables), restored afterwards."""
    if not MOTO_SERVER.exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        # dummies: moto accepts any credentials, and nothing real may leak into tests
        "AWS_ACCESS_KEY_ID": "worldsweep-test-key",
        "AWS_SECRET_ACCESS_KEY": "worldsweep-test-" + secrets.token_hex(8),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        # the endpoint override every S3 client honours (pyarrow >= 15, boto3, Ray Tune)
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",  # never probe a cloud metadata service
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        _wait_http(f"{endpoint}/moto-api/", proc)
        os.environ.update(env)
        server = S3Server(endpoint=endpoint, bucket="worldsweep-test", env=env)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        stop_process(proc)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def multinode_cluster(s3_server) -> Iterator[RayCluster]:
    """A real two-node Ray cluster with token auth: `ray start --head` (1 CPU) plus a
    `ray start --address ...` node (1 CPU, custom resource `worker_b`). Started after the
    S3 server so that every node carries its settings, as the deploy/ manifests give every
    pod the bucket's endpoint and credentials. Separate from the session's single-node Ray;
    stops only its own processes."""
    ray_env()
    cluster = start_head(num_cpus=1)
    try:
        cluster.add_node(num_cpus=1, resources={"worker_b": 1})
        yield cluster
    finally:
        cluster.stop()


def cli_env() -> dict[str, str]:
    """Environment of a worldsweep subprocess: Ray token auth as the cluster has it."""
    env = ray_env()
    env.pop("RAY_ADDRESS", None)  # the address is always passed explicitly
    env["PYTHONPATH"] = str(ROOT)
    return env


@contextlib.contextmanager
def worldsweep_server(store: str, ray_address: str, cwd: Path) -> Iterator[str]:
    """`worldsweep serve --store STORE --ray-address ADDR` on a free loopback port; yields its
    URL once /healthz answers; stops it (and its experiment workers) afterwards."""
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [WORLDSWEEP, "serve", "--port", str(port), "--store", store, "--ray-address", ray_address],
            stdout=log, stderr=subprocess.STDOUT, env=cli_env(), cwd=cwd, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            end = time.time() + 60
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < end, "server did not start: " + log_path.read_text()[-3000:]
                time.sleep(0.3)
            yield url
        finally:
            stop_process(proc, grace=20)


def wait_experiment(url: str, experiment_id: str, timeout: float = 300) -> dict:
    """Poll GET /experiments/{id} until the experiment is final; its JSON."""
    end = time.time() + timeout
    body: dict = {}
    while time.time() < end:
        body = httpx.get(f"{url}/experiments/{experiment_id}", timeout=10).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(1)
    raise AssertionError(f"experiment {experiment_id} not finished after {timeout}s: {body}")
