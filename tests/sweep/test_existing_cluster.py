"""A sweep submitted with --address to a Ray head started by ``ray start`` on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HEAD_IP = "127.0.0.2"  # not 127.0.0.1, which Ray rewrites to the machine's interface address


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HEAD_IP, 0))
        return sock.getsockname()[1]


def stop_processes_using(marker: str) -> None:
    """Terminate, then kill, the processes whose command line contains ``marker``."""
    mine = [
        proc
        for proc in psutil.process_iter(["cmdline"])
        if any(marker in part for part in proc.info["cmdline"] or [])
    ]
    for proc in mine:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=15)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=15)


@pytest.fixture
def ray_head():
    # A short path: Ray's socket paths must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="/tmp/lrh")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    ray = str(Path(sys.executable).with_name("ray"))
    try:
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                "--node-ip-address",
                HEAD_IP,
                "--port",
                str(port),
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--temp-dir",
                temp_dir,
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        yield f"{HEAD_IP}:{port}", env
    finally:
        stop_processes_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_on_existing_cluster(tmp_path, ray_head, small_spec, run_cli):
    address, env = ray_head
    spec = small_spec(name="address_check")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    result = run_cli(
        ["sweep", str(spec_path), "--address", address, "--output-dir", str(tmp_path / "sweep")],
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert len(results) == 4
    assert set(results["status"]) == {"completed"}
    # The trials ran on the cluster's node, not on a local cluster of the driver.
    assert set(results["node_ip"]) == {HEAD_IP}
