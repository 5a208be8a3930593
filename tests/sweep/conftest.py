"""Ray clusters started with ``ray start`` on loopback addresses, stopped by process tree."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

HEAD_IP = "127.0.0.2"  # not 127.0.0.1, which Ray rewrites to the machine's interface address
EDGE_IP = "127.0.0.3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HEAD_IP, 0))
        return int(sock.getsockname()[1])


def stop_processes_using(marker: str) -> None:
    """Terminate, then kill, the processes whose command line contains ``marker`` and every
    process they started (Ray's agents rename themselves, so the marker alone misses them)."""
    roots = [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if any(marker in part for part in proc.info["cmdline"] or [])
    ]
    mine = {proc.pid: proc for proc in roots}
    for proc in roots:
        try:
            mine.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for proc in mine.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(mine.values()), timeout=15)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=15)


@dataclass
class LoopbackCluster:
    """A Ray cluster of ``ray start`` nodes on this machine."""

    address: str
    env: dict[str, str]
    temp_dir: str
    nodes: list[str] = field(default_factory=list)

    def ray(self, *args: str) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        subprocess.run(
            [ray, "start", *args, "--disable-usage-stats", "--temp-dir", self.temp_dir],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def add_edge_worker(self) -> None:
        """Join a worker on 127.0.0.3 that advertises ``edge_pi`` and has no CPU for trials."""
        self.ray(
            "--address",
            self.address,
            "--node-ip-address",
            EDGE_IP,
            "--num-cpus",
            "0",
            "--resources",
            '{"edge_pi": 1}',
            "--object-store-memory",
            str(100 * 1024 * 1024),
        )
        self.nodes.append(EDGE_IP)


def start_head() -> LoopbackCluster:
    # A short path: Ray's socket paths must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="/tmp/lrh")
    port = free_port()
    # Joining a worker fails with this variable set; the nodes bind the loopback addresses
    # given with --node-ip-address instead.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    cluster = LoopbackCluster(f"{HEAD_IP}:{port}", env, temp_dir, [HEAD_IP])
    cluster.ray(
        "--head",
        "--node-ip-address",
        HEAD_IP,
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--include-dashboard",
        "false",
    )
    return cluster


@pytest.fixture
def ray_head() -> Iterator[LoopbackCluster]:
    """A one-node cluster: a head on 127.0.0.2 with 2 CPUs."""
    cluster = None
    try:
        cluster = start_head()
        yield cluster
    finally:
        if cluster is not None:
            stop_processes_using(cluster.temp_dir)
            shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head_and_edge(ray_head: LoopbackCluster) -> LoopbackCluster:
    """A two-node cluster: the head, and a worker on 127.0.0.3 advertising ``edge_pi``."""
    ray_head.add_edge_worker()
    return ray_head
