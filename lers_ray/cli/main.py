"""The ``lers-ray`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def set_quiet_defaults() -> None:
    """Turn off Ray usage stats and MLflow telemetry unless the user set them.

    A local Ray cluster also binds loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``);
    this must happen before Ray is imported.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    from lers_ray.cli.data_commands import add_data_parser
    from lers_ray.cli.edge_commands import add_edge_bench_parser
    from lers_ray.cli.sweep_commands import (
        add_export_parser,
        add_report_parser,
        add_reproduce_parser,
        add_sweep_parser,
        add_train_parser,
    )

    parser = argparse.ArgumentParser(
        prog="lers-ray",
        description="Benchmark and tune lightweight embedding-based recommenders on Ray.",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level of lers_ray's messages (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_sweep_parser(subparsers)
    add_train_parser(subparsers)
    add_export_parser(subparsers)
    add_report_parser(subparsers)
    add_reproduce_parser(subparsers)
    add_data_parser(subparsers)
    add_edge_bench_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    set_quiet_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("lers_ray").setLevel(args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
