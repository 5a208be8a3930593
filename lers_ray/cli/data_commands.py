"""``lers-ray data fetch`` and ``lers-ray data stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lers_ray.config import ConfigError, DatasetConfig
from lers_ray.data.fetch import FETCHABLE, FetchError, fetch_dataset
from lers_ray.data.formats import DataFormatError
from lers_ray.data.loader import load_dataset
from lers_ray.data.paths import resolve_data_dir
from lers_ray.data.registry import REGISTRY, registered_names
from lers_ray.data.stats import dataset_stats

EXIT_USAGE_ERROR = 2


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command with its ``fetch`` and ``stats`` subcommands.

    Each subcommand parser sets ``func``, a callable taking the parsed namespace and
    returning the exit code.
    """
    data_parser = subparsers.add_parser("data", help="download datasets and show their statistics")
    commands = data_parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    data_dir_help = (
        "folder with the dataset folders (default: $LERS_DATA_DIR, else ~/.cache/lers_ray/data)"
    )

    fetch_parser = commands.add_parser(
        "fetch", help="download a dataset into the data dir and verify its checksums"
    )
    fetch_parser.add_argument("name", choices=FETCHABLE, help="dataset to download")
    fetch_parser.add_argument("--data-dir", help=data_dir_help)
    fetch_parser.add_argument(
        "--base-url",
        help="replace the scheme and host of the download URLs (for a mirror); paths are kept",
    )
    fetch_parser.add_argument(
        "--force", action="store_true", help="download files again even if they are present"
    )
    fetch_parser.set_defaults(func=run_fetch)

    stats_parser = commands.add_parser(
        "stats", help="load a dataset, split it and print its counts and split fingerprint"
    )
    stats_parser.add_argument(
        "name",
        help=f"registered dataset ({', '.join(registered_names())}) or a folder with "
        "train.txt/test.txt (lightgcn format) or u.data (movielens format)",
    )
    stats_parser.add_argument("--data-dir", help=data_dir_help)
    stats_parser.add_argument(
        "--subsample-users", type=int, metavar="N", help="keep a seeded random subset of N users"
    )
    stats_parser.add_argument("--json", action="store_true", help="print one JSON object")
    stats_parser.set_defaults(func=run_stats)


def _report_error(error: Exception) -> int:
    print(f"lers-ray: error: {error}", file=sys.stderr)
    return EXIT_USAGE_ERROR


def run_fetch(args: argparse.Namespace) -> int:
    """Download the dataset ``args.name``; print the paths of its files."""
    data_dir = resolve_data_dir(args.data_dir)
    try:
        paths = fetch_dataset(args.name, data_dir, base_url=args.base_url, force=args.force)
    except (FetchError, OSError) as error:
        return _report_error(error)
    for path in paths:
        print(path)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Load the dataset ``args.name`` and print :func:`dataset_stats` of it."""
    if args.name not in REGISTRY and Path(args.name).is_dir():
        config = DatasetConfig(name=Path(args.name).name, path=args.name)
    else:
        config = DatasetConfig(name=args.name)
    config.subsample_users = args.subsample_users
    try:
        stats = dataset_stats(load_dataset(config, data_dir=args.data_dir))
    except (DataFormatError, ConfigError) as error:
        return _report_error(error)

    if args.json:
        print(json.dumps(stats))
        return 0
    width = max(len(key) for key in stats)
    for key, value in stats.items():
        shown = f"{value:.6f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return 0
