"""``lers-ray sweep``, ``train``, ``export`` and ``reproduce``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from lers_ray.config import ConfigError

logger = logging.getLogger(__name__)

DATA_DIR_HELP = "dataset folder (default: $LERS_DATA_DIR, else ~/.cache/lers_ray/data)"
QUICKSTART_SPEC = "quickstart.yaml"
"""The embedded default sweep (synthetic data), shipped inside ``lers_ray.sweep``."""


def add_sweep_parser(subparsers: Any) -> None:
    """Add ``sweep``."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a sweep spec (or the embedded quickstart) on Ray Tune",
        description="Run every study of a sweep spec as Ray Tune trials. Without SPEC, runs the "
        "embedded quickstart sweep on synthetic data.",
    )
    parser.add_argument("spec", nargs="?", help="sweep spec YAML (default: embedded quickstart)")
    parser.add_argument("--resume", metavar="DIR", help="resume the sweep in folder DIR")
    parser.add_argument("--address", help="Ray cluster address (default: start a local cluster)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in DIR)")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--output-dir", help="sweep folder; overrides the spec's output_dir")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    parser.set_defaults(func=run_sweep_command)


def add_train_parser(subparsers: Any) -> None:
    """Add ``train``."""
    parser = subparsers.add_parser(
        "train",
        help="train one config without Tune (the code path of a trial)",
        description="Train and evaluate one trial config (YAML), as a sweep trial would.",
    )
    parser.add_argument("config", help="trial config YAML (an exported file also works)")
    parser.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.set_defaults(func=run_train_command)


def add_export_parser(subparsers: Any) -> None:
    """Add ``export``."""
    parser = subparsers.add_parser(
        "export",
        help="write the best config of every study as YAML",
        description="Write one self-contained YAML per study with its best trial's config.",
    )
    parser.add_argument("sweep_dir", help="the sweep folder")
    parser.add_argument("--out", required=True, help="folder for the YAML files")
    parser.set_defaults(func=run_export_command)


def add_report_parser(subparsers: Any) -> None:
    """Add ``report``."""
    parser = subparsers.add_parser(
        "report",
        help="print a methods-by-targets table of a sweep's best trials",
        description=(
            "Print a Markdown table with one row per method and one column per target "
            "sparsity. Each cell is the study's best trial (by validation NDCG@20): test "
            "NDCG@20 / Recall@20 (achieved sparsity)."
        ),
    )
    parser.add_argument("sweep_dir", help="the sweep folder")
    parser.add_argument("--dataset", default=None, help="dataset label, when the sweep has several")
    parser.add_argument(
        "--edge",
        action="store_true",
        help="show edge figures instead: artifact KiB, per-query / precomputed p50 latency (ms)",
    )
    parser.set_defaults(func=run_report_command)


def add_reproduce_parser(subparsers: Any) -> None:
    """Add ``reproduce``."""
    parser = subparsers.add_parser(
        "reproduce",
        help="retrain an exported config and compare its metrics",
        description="Retrain an exported config; exit 1 when test NDCG@20 differs from the "
        "exported value by more than the tolerance (relative).",
    )
    parser.add_argument("file", help="an exported YAML file")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="largest accepted relative difference of test NDCG@20 (default: 0.02, i.e. 2%%)",
    )
    parser.add_argument(
        "--out",
        default="runs/reproduce",
        help="folder for the retrained model (default: runs/reproduce)",
    )
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.set_defaults(func=run_reproduce_command)


def _fail(error: Exception) -> int:
    print(f"lers-ray: error: {error}", file=sys.stderr)
    return 2


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run or resume a sweep and print the best trial of every study."""
    from lers_ray.sweep.spec import load_sweep_spec

    try:
        if args.resume and (args.spec or args.output_dir):
            raise ConfigError(
                "--resume DIR continues the sweep in DIR with its stored spec; "
                "give neither SPEC nor --output-dir with it"
            )
        spec = None
        if not args.resume:
            if args.spec:
                spec = load_sweep_spec(args.spec)
            else:
                with resources.as_file(resources.files("lers_ray.sweep") / QUICKSTART_SPEC) as path:
                    spec = load_sweep_spec(path)
            if args.output_dir:
                spec.output_dir = args.output_dir
        local = not (args.address or (spec is not None and spec.ray_address))
        if local:
            # Before Ray is imported: a local cluster then binds loopback only.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        from lers_ray.sweep.runner import run_sweep

        outcome = run_sweep(
            spec,
            resume_dir=Path(args.resume) if args.resume else None,
            address=args.address,
            tracking_uri=args.tracking_uri,
            data_dir=args.data_dir,
            num_cpus=args.num_cpus,
        )
    except (ValueError, FileNotFoundError) as error:
        # ConfigError and DataFormatError are ValueErrors; both name the file or key to fix.
        return _fail(error)
    print()
    print(format_study_table(outcome.studies))
    for study_id, reason in outcome.skipped.items():
        print(f"skipped {study_id}: {reason}")
    print()
    print(f"sweep folder: {outcome.sweep_dir}")
    print(f"results:      {outcome.sweep_dir / 'results.parquet'}")
    print(f"MLflow:       {outcome.tracking_uri}")
    print(f"  view with:  mlflow ui --backend-store-uri {outcome.tracking_uri}")
    if not outcome.complete:
        print(f"the sweep stopped early; resume with: lers-ray sweep --resume {outcome.sweep_dir}")
        return 1
    empty = [row["study"] for row in outcome.studies if row.get("best_trial") is None]
    if empty:
        print(
            f"no completed trial in {len(empty)} of {len(outcome.studies)} studies: "
            f"{', '.join(empty)}; "
            f"see failure_reason in {outcome.sweep_dir / 'results.parquet'}"
        )
        return 1
    return 0


def _edge_cell(row: dict[str, Any]) -> str:
    """Per-query and precomputed p50 latency of the best trial, or why there is none."""
    status = row.get("edge.status")
    if status is None:
        return "-"
    if status != "ok":
        return str(status)
    simulated = " (simulated)" if row.get("edge.simulated") == "true" else ""
    return f"{row['edge.per_query.p50_ms']:.2f} / {row['edge.precomputed.p50_ms']:.3f}{simulated}"


def format_study_table(rows: list[dict[str, Any]]) -> str:
    """Format the best trial of every study as a fixed-width text table."""
    columns = [
        ("study", "study", "{}"),
        ("trials", None, "{}"),
        ("best", "best_trial", "{}"),
        ("val R@20", "val_recall_20", "{:.4f}"),
        ("val N@20", "val_ndcg_20", "{:.4f}"),
        ("test R@20", "test_recall_20", "{:.4f}"),
        ("test N@20", "test_ndcg_20", "{:.4f}"),
        ("sparsity", "sparsity", "{:.4f}"),
        ("KiB", "artifact_bytes", "{}"),
        ("edge p50 ms per query / precomputed", "edge.status", "{}"),
    ]
    table = []
    for row in rows:
        cells = []
        for _, key, pattern in columns:
            if key is None:
                failed = f", {row['failed']} failed" if row.get("failed") else ""
                cells.append(f"{row['finished']}/{row['planned']}{failed}")
                continue
            if key == "artifact_bytes" and row.get(key) is not None:
                cells.append(f"{float(row[key]) / 1024:.1f}")
                continue
            if key == "edge.status":
                cells.append(_edge_cell(row))
                continue
            value = row.get(key)
            cells.append("-" if value is None else pattern.format(value))
        if row.get("blocked"):
            cells[2] = f"blocked: {row['blocked']}"
        table.append(cells)
    header = [name for name, _, _ in columns]
    widths = [max(len(header[i]), *(len(r[i]) for r in table)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table]
    return "\n".join(lines)


def run_train_command(args: argparse.Namespace) -> int:
    """Train one config and print its selected epoch's metrics."""
    from lers_ray.config import TrialConfig
    from lers_ray.data import load_dataset
    from lers_ray.data.paths import resolve_data_dir
    from lers_ray.edge.export import ARTIFACT_FILE, GRAPH_FILE, write_graph_artifact
    from lers_ray.training.runner import run_trial

    try:
        config = TrialConfig.from_yaml(args.config)
        data = load_dataset(config.dataset, data_dir=resolve_data_dir(args.data_dir))
        outcome = run_trial(config, Path(args.out), data=data)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        return _fail(error)
    artifact = Path(args.out) / ARTIFACT_FILE
    graph = Path(args.out) / GRAPH_FILE
    if outcome.status == "completed":
        write_graph_artifact(graph, data)
    print(f"status: {outcome.status}")
    if outcome.failure_reason:
        print(f"reason: {outcome.failure_reason}")
    print(f"split fingerprint: {data.fingerprint}")
    if outcome.status == "completed":
        print(f"best epoch: {outcome.best_epoch} of {outcome.epochs_run}")
    for key in sorted(outcome.metrics):
        print(f"{key}: {outcome.metrics[key]:.6g}")
    print(f"checkpoint: {outcome.checkpoint_path}")
    if outcome.status == "completed":
        print(
            f"edge artifact: {artifact} (measure it with: lers-ray edge-bench {artifact} "
            f"--graph {graph})"
        )
    return 0 if outcome.status == "completed" else 1


def run_export_command(args: argparse.Namespace) -> int:
    """Export the best config of every study."""
    from lers_ray.sweep.export import export_best_configs

    try:
        written = export_best_configs(args.sweep_dir, args.out)
    except (ConfigError, FileNotFoundError) as error:
        return _fail(error)
    for path in written:
        print(path)
    return 0


def run_report_command(args: argparse.Namespace) -> int:
    """Print the methods-by-targets table of a sweep."""
    from lers_ray.sweep.report import sweep_table

    try:
        print(sweep_table(args.sweep_dir, args.dataset, "edge" if args.edge else "accuracy"))
    except (FileNotFoundError, ValueError) as error:
        return _fail(error)
    return 0


def run_reproduce_command(args: argparse.Namespace) -> int:
    """Retrain an exported config; exit 1 when test NDCG@20 is outside the tolerance."""
    from lers_ray.sweep.export import reproduce

    try:
        result = reproduce(args.file, args.out, tolerance=args.tolerance, data_dir=args.data_dir)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        return _fail(error)
    print(f"{'metric':<16}{'exported':>12}{'reproduced':>12}{'rel. diff':>12}")
    for name, before, after, difference in result.rows:
        cells = ["-" if v is None else f"{v:.4f}" for v in (before, after)]
        diff = "-" if difference is None else f"{difference:.2%}"
        print(f"{name:<16}{cells[0]:>12}{cells[1]:>12}{diff:>12}")
    if not result.fingerprint_matches:
        print("split fingerprint differs from the exported one: the data or split changed")
    verdict = "within" if result.passed else "OUTSIDE"
    print(
        f"test NDCG@20 relative difference {result.test_ndcg_relative_difference:.2%} is "
        f"{verdict} the tolerance {args.tolerance:.2%}"
    )
    return 0 if result.passed else 1
