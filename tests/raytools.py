"""Start and stop real Ray nodes for tests (`ray start --block`), killing only what we start.

`ray stop` would kill every Ray on the machine (other test sessions, a user's cluster), so
each node runs `ray start --block` in its own process group and is stopped by signalling
that group.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    """Environment every Ray process and client of the test session shares (token auth on)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    return dict(os.environ)


def _node_ports() -> list[str]:
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


@dataclass
class RayCluster:
    address: str
    temp_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def add_node(self, num_cpus: int = 1, resources: dict[str, float] | None = None) -> None:
        args = [RAY, "start", "--block", f"--address={self.address}", f"--num-cpus={num_cpus}",
                "--disable-usage-stats", *_node_ports()]
        if resources:
            args.append(f"--resources={json.dumps(resources)}")
        before = self._alive_nodes()
        self.procs.append(_spawn(args, self.temp_dir / f"node{len(self.procs)}.log"))
        self._wait(lambda: self._alive_nodes() > before, "worker node to join")

    def _alive_nodes(self) -> int:
        try:
            out = subprocess.run(
                [sys.executable, "-c", "import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
                 "print(sum(n['Alive'] for n in ray.nodes()))", self.address],
                capture_output=True, text=True, env=ray_env(), timeout=60,
            )
        except subprocess.TimeoutExpired:
            return 0
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def _wait(self, ok, what: str, timeout: float = 90) -> None:
        end = time.time() + timeout
        while time.time() < end:
            dead = [p.args for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"ray exited early: {dead[0]}; logs in {self.temp_dir}")
            if ok():
                return
            time.sleep(1)
        raise RuntimeError(f"timed out waiting for {what}; logs in {self.temp_dir}")

    def stop(self) -> None:
        """Terminate every process our `ray start` commands spawned (and only those)."""
        pids = [pid for p in self.procs for pid in _tree(p.pid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.time() + (3 if sig == signal.SIGTERM else 10)
            while time.time() < end and any(_alive(pid) for pid in pids):
                for p in self.procs:
                    p.poll()
                time.sleep(0.2)
        for p in self.procs:
            p.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _tree(root: int) -> list[int]:
    """root and all its descendants, from /proc (no psutil dependency)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")  # noqa: SIM115 - lives as long as the node
    return subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True)


def start_head(num_cpus: int = 2, resources: dict[str, float] | None = None) -> RayCluster:
    """`ray start --head` on free ports with its own temp dir; returns once it accepts clients."""
    import tempfile

    temp_dir = Path(tempfile.mkdtemp(prefix="ws-ray-", dir="/tmp"))
    port = free_port()
    args = [RAY, "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
            *_node_ports()]
    if resources:
        args.append(f"--resources={json.dumps(resources)}")
    cluster = RayCluster(address=f"127.0.0.1:{port}", temp_dir=temp_dir)
    cluster.procs.append(_spawn(args, temp_dir / "head.log"))
    cluster._wait(lambda: cluster._alive_nodes() >= 1, "Ray head to start")
    return cluster
