"""clusters/pi/join.sh and setup.sh: version checks before `ray start`, and the start arguments.

The fast tests replace `ray` (and `ssh`) with small scripts on PATH that record their
arguments. The slow test joins a real Ray head on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import ray

REPO = Path(__file__).resolve().parents[2]
JOIN = REPO / "clusters" / "pi" / "join.sh"
SETUP = REPO / "clusters" / "pi" / "setup.sh"
PRINT_VERSIONS = REPO / "clusters" / "head" / "print_versions.sh"
RUNNING_PYTHON = ".".join(str(part) for part in sys.version_info[:3])
DEFAULT_OBJECT_STORE = "268435456"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

FAKE_RAY = """#!{python}
import json, os, sys

with open(os.environ["FAKE_RAY_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:] == ["--version"]:
    print("ray, version " + os.environ["FAKE_RAY_VERSION"])
"""

# Runs the remote command locally, after recording the ssh destination.
FAKE_SSH = """#!/usr/bin/env bash
echo "$1" >>"$FAKE_SSH_LOG"
shift
exec bash -c "$*"
"""


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """A folder with the fake `ray` and `ssh`, to go first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in {"ray": FAKE_RAY.format(python=sys.executable), "ssh": FAKE_SSH}.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
    return folder


@pytest.fixture
def join_env(tmp_path, fake_bin) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "RAY"}
    env.update(
        PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        PYTHON=sys.executable,
        FAKE_RAY_LOG=str(tmp_path / "ray_calls.jsonl"),
        FAKE_RAY_VERSION=ray.__version__,
        FAKE_SSH_LOG=str(tmp_path / "ssh_calls.txt"),
    )
    return env


def write_versions(tmp_path: Path, python: str, ray_version: str, torch: str = "2.13.0") -> Path:
    path = tmp_path / "head_versions.txt"
    path.write_text(f"python={python}\nray={ray_version}\ntorch={torch}\nlers_ray=0.1.0\n")
    return path


def run_join(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(JOIN), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ray_calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["FAKE_RAY_LOG"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def start_call(env: dict[str, str]) -> list[str]:
    starts = [call for call in ray_calls(env) if call[:1] == ["start"]]
    assert len(starts) == 1, f"ray calls: {ray_calls(env)}"
    return starts[0]


def option_value(args: list[str], option: str) -> str:
    assert option in args, f"{option} missing from {args}"
    return args[args.index(option) + 1]


def test_join_ray_mismatch_stops_before_ray(tmp_path, join_env):
    versions = write_versions(tmp_path, RUNNING_PYTHON, "2.59.0")
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions)], join_env)
    assert result.returncode != 0
    assert "2.59.0" in result.stderr
    assert ray.__version__ in result.stderr
    assert "pip install 'ray[default]==2.59.0'" in result.stderr
    assert ray_calls(join_env) == []


def test_join_python_mismatch_stops_before_ray(tmp_path, join_env):
    other = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro + 1}"
    versions = write_versions(tmp_path, other, ray.__version__)
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions)], join_env)
    assert result.returncode != 0
    assert other in result.stderr
    assert RUNNING_PYTHON in result.stderr
    assert "setup.sh" in result.stderr
    assert ray_calls(join_env) == []


def test_join_matching_versions_start_edge_node(tmp_path, join_env):
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions)], join_env)
    assert result.returncode == 0, result.stderr
    args = start_call(join_env)
    assert option_value(args, "--address") == "127.0.0.2:6379"
    assert option_value(args, "--resources") == '{"edge_pi": 1}'
    assert option_value(args, "--num-cpus") == "0"
    assert option_value(args, "--num-gpus") == "0"
    assert option_value(args, "--object-store-memory") == DEFAULT_OBJECT_STORE
    assert "--disable-usage-stats" in args
    assert "--node-ip-address" not in args


def test_join_passes_overrides_through(tmp_path, join_env):
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    args = [
        "head.example:6379",
        "--head-versions",
        str(versions),
        "--object-store-memory",
        "536870912",
        "--node-ip-address",
        "127.0.0.3",
    ]
    result = run_join(args, join_env)
    assert result.returncode == 0, result.stderr
    started = start_call(join_env)
    assert option_value(started, "--object-store-memory") == "536870912"
    assert option_value(started, "--node-ip-address") == "127.0.0.3"


def test_join_reads_head_versions_over_ssh(join_env):
    result = run_join(["127.0.0.2:6379", "--head-ssh", "ubuntu@head"], join_env)
    assert result.returncode == 0, result.stderr
    assert Path(join_env["FAKE_SSH_LOG"]).read_text().split() == ["ubuntu@head"]
    assert option_value(start_call(join_env), "--address") == "127.0.0.2:6379"


def test_join_dry_run_starts_nothing(tmp_path, join_env):
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions), "--dry-run"], join_env)
    assert result.returncode == 0, result.stderr
    assert """--resources '{"edge_pi": 1}'""" in result.stdout
    assert [call for call in ray_calls(join_env) if call[:1] == ["start"]] == []


def test_join_stops_when_lers_ray_does_not_import(tmp_path, join_env):
    # A package earlier on sys.path shadows the installed lers_ray and fails to import.
    shadow = tmp_path / "shadow" / "lers_ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('simulated broken lers_ray install')\n")
    join_env["PYTHONPATH"] = str(shadow.parent)
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions)], join_env)
    assert result.returncode != 0
    assert "simulated broken lers_ray install" in result.stderr
    assert ray_calls(join_env) == []


def test_join_stops_when_ray_cli_differs(tmp_path, join_env):
    join_env["FAKE_RAY_VERSION"] = "2.59.0"
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions)], join_env)
    assert result.returncode != 0
    assert "ray, version 2.59.0" in result.stderr
    assert ray_calls(join_env) == [["--version"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--head-versions", "VERSIONS"], "HEAD_ADDRESS is missing"),
        (["headhost", "--head-versions", "VERSIONS"], "HEAD_ADDRESS must be HOST:PORT"),
        (["h:6379"], "--head-versions FILE"),
        (["h:6379", "--head-versions", "VERSIONS", "--head-ssh", "u@h"], "not both"),
        (["h:6379", "--head-versions", "missing.txt"], "missing.txt' not found"),
        (
            ["h:6379", "--head-versions", "VERSIONS", "--object-store-memory", "1000"],
            "below Ray's minimum",
        ),
        (
            ["h:6379", "--head-versions", "VERSIONS", "--object-store-memory", "256MiB"],
            "must be a number of bytes",
        ),
        (["h:6379", "--head-versions", "VERSIONS", "--bogus"], "unknown option '--bogus'"),
    ],
)
def test_join_rejects_invalid_arguments(tmp_path, join_env, args, message):
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    args = [str(versions) if arg == "VERSIONS" else arg for arg in args]
    result = run_join(args, join_env)
    assert result.returncode != 0
    assert message in result.stderr
    assert ray_calls(join_env) == []


def test_print_versions_format():
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(PRINT_VERSIONS)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert lines["python"] == RUNNING_PYTHON
    assert lines["ray"] == ray.__version__
    assert set(lines) == {"python", "ray", "torch", "lers_ray"}


def test_setup_dry_run_installs_head_versions(tmp_path):
    versions = write_versions(tmp_path, "3.11.14", "2.59.0", torch="2.13.0+cu128")
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["bash", str(SETUP), "--head-versions", str(versions), "--venv", str(venv), "--dry-run"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    assert any(c.endswith("uv python install 3.11.14") for c in commands)
    torch = [c for c in commands if "torch==" in c]
    expected = f"+ {venv}/bin/python -m pip install --index-url {CPU_INDEX} torch==2.13.0"
    assert torch == [expected]
    project = [c for c in commands if "ray[default]" in c]
    assert project == [f"+ {venv}/bin/python -m pip install 'ray[default]==2.59.0' {REPO}"]
    assert commands.index(torch[0]) < commands.index(project[0])


# The real thing: a Ray head on 127.0.0.2, and join.sh starting a real node on 127.0.0.3.


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
    _, alive = psutil.wait_procs(mine, timeout=10)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.mark.slow
def test_join_real_ray_head(tmp_path):
    # Joining a second node fails with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER set, so the Ray
    # processes get an environment without it.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHON=sys.executable)
    env["RAY"] = str(Path(sys.executable).with_name("ray"))
    # A short path: Ray's socket paths must fit in 107 bytes. It also marks every process of
    # this cluster, the joined node's included, for the clean-up.
    temp_dir = tempfile.mkdtemp(prefix="/tmp/lrpi")
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        port = sock.getsockname()[1]
    head = [env["RAY"], "start", "--head", "--node-ip-address", "127.0.0.2", "--port", str(port)]
    head += ["--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats"]
    head += ["--temp-dir", temp_dir]
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        versions = tmp_path / "head_versions.txt"
        versions.write_text(
            subprocess.run(
                ["bash", str(PRINT_VERSIONS)], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        joined = subprocess.run(
            [
                "bash",
                str(JOIN),
                f"127.0.0.2:{port}",
                "--head-versions",
                str(versions),
                "--node-ip-address",
                "127.0.0.3",
                "--object-store-memory",
                "100000000",
            ],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert joined.returncode == 0, joined.stdout[-2000:] + joined.stderr[-2000:]

        probe = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
nodes = [n for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == "127.0.0.3"]
@ray.remote(num_cpus=0, resources={"edge_pi": 1})
def where():
    return ray.util.get_node_ip_address()
ran_on = ray.get(where.remote(), timeout=60)
print(json.dumps({"resources": nodes[0]["Resources"], "ran_on": ran_on}))
"""
        result = subprocess.run(
            [sys.executable, "-c", probe, f"127.0.0.2:{port}"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        found = json.loads(result.stdout.strip().splitlines()[-1])
        assert found["resources"]["edge_pi"] == 1
        assert "CPU" not in found["resources"]
        assert "GPU" not in found["resources"]
        assert found["resources"]["object_store_memory"] == 100000000
        assert found["ran_on"] == "127.0.0.3"
    finally:
        stop_processes_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    """A Python of another environment, without Ray (a venv without pip)."""
    folder = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return str(folder / "bin" / "python")


def test_print_versions_without_ray_exits_1(bare_python):
    result = subprocess.run(
        ["bash", str(PRINT_VERSIONS)],
        check=False,
        env={**os.environ, "PYTHON": bare_python},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ray=not-installed" in result.stdout
    assert "Ray is not installed" in result.stderr


def test_join_without_ray_names_setup(tmp_path, join_env, bare_python):
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    env = {**join_env, "PYTHON": bare_python}
    result = run_join(["127.0.0.2:6379", "--head-versions", str(versions)], env)
    assert result.returncode != 0
    assert f"Ray is not installed for {bare_python}" in result.stderr
    assert "clusters/pi/setup.sh" in result.stderr
    assert ray_calls(join_env) == []


def test_join_rejects_ray_of_another_environment(tmp_path, join_env, bare_python):
    versions = write_versions(tmp_path, RUNNING_PYTHON, ray.__version__)
    other_ray = tmp_path / "other_ray"
    other_ray.write_text(FAKE_RAY.format(python=bare_python))
    other_ray.chmod(0o755)
    result = run_join(
        ["127.0.0.2:6379", "--head-versions", str(versions)], {**join_env, "RAY": str(other_ray)}
    )
    assert result.returncode != 0
    assert "belongs to the environment" in result.stderr
    assert ray_calls(join_env) == []
