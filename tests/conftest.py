"""Test-wide settings: loopback-only Ray, no telemetry, real data from the shared folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# These must be set before Ray or MLflow is imported anywhere in the test session.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LERS_DATA_DIR", str(REPO_ROOT.parent / "shared" / "data"))
os.environ.setdefault("LERS_CACHE_DIR", tempfile.mkdtemp(prefix="lers-test-cache-"))

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (``LERS_DATA_DIR``); tests that need them skip nothing: it must exist."""
    path = Path(os.environ["LERS_DATA_DIR"])
    assert path.is_dir(), f"LERS_DATA_DIR={path} does not exist; point it at the shared data"
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs, loopback) shared by the in-process sweep tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def small_spec():
    """Build a sweep spec dict over small synthetic data; keyword arguments override keys."""

    def build(**overrides):
        spec = {
            "name": "small",
            "datasets": [
                {
                    "name": "synthetic",
                    "synthetic": {"n_users": 300, "n_items": 400, "n_interactions": 6000},
                }
            ],
            "backbones": ["mf"],
            "methods": ["full", "magprune"],
            "targets": [0.8],
            "trials_per_study": 2,
            "epochs": 2,
            "patience": 0,
            "dim": 16,
            "search_space_dir": str(REPO_ROOT / "search_spaces"),
            "early_stopping": {"enabled": False},
            # Edge measurement has tests of its own (tests/sweep/test_edge_*.py).
            "edge": {"enabled": False},
        }
        spec.update(overrides)
        return spec

    return build


@pytest.fixture
def run_cli():
    """Run ``lers-ray ARGS`` in its own process and return the completed process."""
    import subprocess
    import sys

    def run(args, cwd, env=None, timeout=600):
        return subprocess.run(
            [sys.executable, "-m", "lers_ray.cli.main", *args],
            cwd=cwd,
            env=dict(os.environ) if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
