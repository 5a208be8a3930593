"""Provenance tags: git commit and package versions, recorded with every run."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("lers_ray", "torch", "ray", "optuna", "mlflow", "numpy", "pandas", "pyarrow")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Return the commit of the lers_ray checkout (with ``-dirty`` if modified), or ``unknown``."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Return installed versions of the packages that shape results."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance_tags() -> dict[str, str]:
    """Return ``git_commit`` and ``version.<package>`` tags."""
    tags = {"git_commit": git_commit()}
    tags.update({f"version.{name}": version for name, version in package_versions().items()})
    return tags
