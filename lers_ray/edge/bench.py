"""Measure a model artifact as the edge device serves it: load, memory and query latency.

:func:`measure` runs in the current process. :func:`run_isolated` runs it in a fresh Python
process (``python -m lers_ray.edge.bench``) that imports torch, numpy and the decoders only,
so the figures do not include a Ray worker's or a CLI's own memory. Both the sweep's Ray task
and ``lers-ray edge-bench`` use :func:`run_isolated`.

Phases, each with its own peak resident memory (the kernel's peak counter is reset between
phases on Linux):

1. **load**: read both files, parse them, import the table decoders and (LightGCN) build the
   normalised adjacency;
2. **per_query**: ``warmup`` untimed, then ``repeats`` timed queries, each decoding the tables
   and propagating;
3. **precomputed**: compute the final embeddings once (``precompute_ms``), then ``warmup`` and
   ``repeats`` queries that only score, mask and take the top K.

A query scores one user (drawn with a fixed seed among users with train items) against all
items, masks the user's train items and takes the top K.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lers_ray.edge.loader import MODES, EdgeRecommender, load_graph, load_model
from lers_ray.edge.options import BenchOptions
from lers_ray.memory import current_rss_mb, peak_rss_mb, reset_peak_rss

logger = logging.getLogger(__name__)

SWEEP_STACK = ("ray", "optuna", "mlflow", "pandas", "pyarrow", "yaml")
"""Packages that loading an artifact must not need. The measurement reports any it finds loaded."""


def node_tags() -> dict[str, str]:
    """Return tags that identify the measuring machine: CPU architecture, CPU count and versions."""
    try:
        ray_version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        ray_version = "not installed"
    return {
        "edge.machine": platform.machine(),
        "edge.cpu_count": str(os.cpu_count()),
        "edge.platform": platform.platform(),
        "edge.hostname": socket.gethostname(),
        "edge.python": platform.python_version(),
        "edge.torch": torch.__version__,
        "edge.numpy": np.__version__,
        "edge.ray": ray_version,
    }


def _timed_queries(
    recommender: EdgeRecommender, users: np.ndarray, options: BenchOptions, mode: str
) -> list[float]:
    """Run ``warmup`` untimed and then ``repeats`` timed queries, and return the timed latencies in ms."""
    latencies = []
    for index, user in enumerate(users):
        started = time.perf_counter()
        recommender.recommend(int(user), options.top_k, mode)
        elapsed = (time.perf_counter() - started) * 1000.0
        if index >= options.warmup:
            latencies.append(elapsed)
    return latencies


def _latency_metrics(prefix: str, latencies: list[float]) -> dict[str, float]:
    values = np.asarray(latencies)
    return {
        f"{prefix}.p50_ms": float(np.percentile(values, 50)),
        f"{prefix}.p95_ms": float(np.percentile(values, 95)),
        f"{prefix}.mean_ms": float(values.mean()),
    }


def measure(
    model_path: str | Path, graph_path: str | Path, options: BenchOptions | None = None
) -> dict[str, dict[str, Any]]:
    """Measure the artifact at ``model_path`` with the graph at ``graph_path``.

    Returns:
        ``{"metrics": {...}, "tags": {...}}``, every key starting with ``edge.``. Metrics:
        ``artifact_bytes``, ``graph_bytes``, ``rss_baseline_mb`` (before loading),
        ``load_ms``, ``load_peak_rss_mb``, ``precompute_ms`` and, for each mode,
        ``<mode>.p50_ms``, ``.p95_ms``, ``.mean_ms`` and ``.peak_rss_mb``. Tags: the
        machine (:func:`node_tags`), the options, the model's method and backbone, and
        ``rss_method``. The tag ``sweep_stack_loaded`` lists the :data:`SWEEP_STACK` packages
        this process had imported, and it is empty on a clean device.

    Raises:
        ArtifactError: when a file is not a valid artifact or the two do not match.
    """
    options = options or BenchOptions()
    options.validate()
    torch.set_num_threads(options.threads)
    metrics: dict[str, float] = {"edge.rss_baseline_mb": current_rss_mb()}
    resettable = reset_peak_rss()

    started = time.perf_counter()
    model = load_model(model_path)
    graph = load_graph(graph_path)
    recommender = EdgeRecommender(model, graph)
    metrics["edge.load_ms"] = (time.perf_counter() - started) * 1000.0
    metrics["edge.load_peak_rss_mb"] = peak_rss_mb()
    metrics["edge.artifact_bytes"] = float(model.nbytes)
    metrics["edge.graph_bytes"] = float(graph.nbytes)

    with_items = np.flatnonzero(np.diff(graph.crow.numpy()) > 0)
    if with_items.size == 0:
        raise ValueError(f"{graph_path}: no user has train items, so there is nothing to query")
    rng = np.random.default_rng(options.seed)
    users = rng.choice(with_items, size=options.warmup + options.repeats, replace=True)

    for mode in MODES:
        reset_peak_rss()
        if mode == "precomputed":
            started = time.perf_counter()
            recommender.precompute()
            metrics["edge.precompute_ms"] = (time.perf_counter() - started) * 1000.0
        latencies = _timed_queries(recommender, users, options, mode)
        metrics.update(_latency_metrics(f"edge.{mode}", latencies))
        metrics[f"edge.{mode}.peak_rss_mb"] = peak_rss_mb()

    tags = node_tags()
    tags.update(
        {
            "edge.threads": str(options.threads),
            "edge.repeats": str(options.repeats),
            "edge.warmup": str(options.warmup),
            "edge.top_k": str(options.top_k),
            "edge.method": str(model.meta.get("method")),
            "edge.backbone": model.backbone,
            "edge.codecs": json.dumps(model.meta["tables"], sort_keys=True),
            # NOTE: without a resettable counter (not Linux), every peak is the process's
            # lifetime peak, so the per-query and precomputed figures include loading.
            "edge.rss_method": "per-phase VmHWM" if resettable else "lifetime ru_maxrss",
            "edge.sweep_stack_loaded": ",".join(m for m in SWEEP_STACK if m in sys.modules),
        }
    )
    return {"metrics": metrics, "tags": tags}


class BenchError(RuntimeError):
    """The measuring process failed. The message contains the end of its error output."""


def run_isolated(
    model_path: str | Path,
    graph_path: str | Path,
    options: BenchOptions | None = None,
    timeout_s: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Run :func:`measure` in a fresh Python process and return its result.

    Raises:
        BenchError: when the process fails or runs past ``timeout_s``, with its error output.
    """
    options = options or BenchOptions()
    options.validate()
    command = [sys.executable, "-m", "lers_ray.edge.bench", str(model_path), str(graph_path)]
    command += [*options.to_args(), "--exit-with-parent"]
    env = dict(os.environ)
    # The OpenMP pool must match torch's thread count, or idle threads skew the latency.
    env["OMP_NUM_THREADS"] = str(options.threads)
    env["MKL_NUM_THREADS"] = str(options.threads)
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(
            f"edge measurement timed out after {timeout_s} s and was stopped"
        ) from error
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:]).removeprefix("error: ")
        raise BenchError(f"edge measurement failed (exit {completed.returncode}): {tail}")
    result: dict[str, dict[str, Any]] = json.loads(completed.stdout)
    return result


def _exit_with_parent() -> None:
    """Exit as soon as this process's parent ends, checking once a second.

    Ray kills a cancelled task's worker outright, and without this check the measuring
    process it started would run to its end on the device.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Measure one artifact and print the result as JSON (``python -m lers_ray.edge.bench``)."""
    parser = argparse.ArgumentParser(
        prog="python -m lers_ray.edge.bench",
        description="Measure one edge artifact and print the figures as JSON.",
    )
    parser.add_argument("model", help="the model artifact (artifact.lers)")
    parser.add_argument("graph", help="the dataset's graph artifact (graph.lers)")
    BenchOptions.add_arguments(parser)
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the process that started this one ends (a cancelled Ray task)",
    )
    args = parser.parse_args(argv)

    if args.exit_with_parent:
        _exit_with_parent()
    options = BenchOptions.from_args(args)
    try:
        result = measure(args.model, args.graph, options)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
