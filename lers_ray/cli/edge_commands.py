"""``lers-ray edge-bench``: measure a model artifact on this machine, without Ray."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lers_ray.config import ConfigError


def add_edge_bench_parser(subparsers: Any) -> None:
    """Add ``edge-bench``."""
    from lers_ray.edge.options import BenchOptions

    parser = subparsers.add_parser(
        "edge-bench",
        help="measure a model artifact: load time, peak memory, query latency",
        description=(
            "Measure a model artifact (artifact.lers) as an edge device serves it: load time, "
            "peak resident memory, and p50/p95 latency of top-K queries for one user, with "
            "per-query decoding and propagation and with precomputed embeddings. Runs in a "
            "fresh Python process that imports torch and numpy only."
        ),
    )
    parser.add_argument("artifact", help="the model artifact a trial wrote (artifact.lers)")
    parser.add_argument(
        "--graph",
        help="the dataset's graph artifact (default: graph.lers next to the artifact, or the "
        "sweep's edge/ folder graph of the same split)",
    )
    BenchOptions.add_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before the measurement is stopped (default: no limit)",
    )
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.set_defaults(func=run_edge_bench_command)


def find_graph(artifact: Path) -> Path:
    """Return the graph artifact of the model at ``artifact``'s split.

    Looks for ``graph.lers`` beside the artifact, then in every parent folder and its
    ``edge/`` subfolder, and takes the first whose split fingerprint matches the model's.

    Raises:
        ConfigError: when no graph of that split is found.
    """
    from lers_ray.edge.container import read_meta

    fingerprint = read_meta(artifact).get("fingerprint")
    for folder in artifact.resolve().parents:
        candidates = [folder / "graph.lers", *sorted((folder / "edge").glob("*.lers"))]
        for candidate in candidates:
            if candidate.is_file() and read_meta(candidate).get("fingerprint") == fingerprint:
                return candidate
    raise ConfigError(
        f"{artifact}: no graph artifact of split {fingerprint} found beside it or in a parent "
        "folder's edge/; give it with --graph (lers-ray train writes graph.lers in its --out "
        "folder, a sweep writes edge/<dataset>.graph.lers)"
    )


def run_edge_bench_command(args: argparse.Namespace) -> int:
    """Measure one artifact and print (and optionally write) its figures."""
    from lers_ray.cli.sweep_commands import _fail
    from lers_ray.edge.bench import BenchError, run_isolated
    from lers_ray.edge.container import ArtifactError, read_meta
    from lers_ray.edge.options import BenchOptions

    artifact = Path(args.artifact)
    options = BenchOptions.from_args(args)
    out = Path(args.out) if args.out else None
    try:
        options.validate()
        if artifact.is_dir():
            raise ConfigError(f"{artifact} is a folder; give the artifact.lers file inside it")
        if not artifact.is_file():
            raise ConfigError(f"{artifact}: artifact file not found")
        if out is not None and out.is_dir():
            raise ConfigError(f"--out {out} is a folder; give a file name such as figures.json")
        graph = Path(args.graph) if args.graph else find_graph(artifact)
        for path, kind in ((artifact, "cf_model"), (graph, "cf_graph")):
            found = read_meta(path).get("kind")
            if found != kind:
                raise ArtifactError(f"{path}: expected a {kind!r} artifact, found {found!r}")
    except (ConfigError, ArtifactError, ValueError, OSError) as error:
        return _fail(error)
    try:
        result = run_isolated(artifact, graph, options, timeout_s=args.timeout)
    except BenchError as error:
        # The input was valid but the measurement failed or timed out: exit 1, not 2.
        print(f"lers-ray: {error}", file=sys.stderr)
        return 1
    print(f"artifact: {artifact}")
    print(f"graph: {graph}")
    for key, value in sorted(result["metrics"].items()):
        print(f"{key}: {value:.6g}")
    for key, value in sorted(result["tags"].items()):
        print(f"{key}: {value}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"figures written to {out}")
    return 0
