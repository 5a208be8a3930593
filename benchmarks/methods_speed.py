"""Time one training epoch of every embedding method on Gowalla with LightGCN.

For each method at one target sparsity, the script builds the tables a trial trains. These are
the search tables and then the fixed-mask tables for two-stage methods, and the pruned tables
for ``magprune+ft``. It warms up, times ``--batches`` BPR batches and extrapolates to an epoch.
Post-hoc methods without training (magprune, random_prune, ptq) are timed for deriving their
tables from a full table instead. Prints a Markdown table and optionally writes JSON.

Run: ``LERS_DATA_DIR=/path/to/data python benchmarks/methods_speed.py --target 0.8``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lers_ray.config import TrialConfig
from lers_ray.data import load_dataset
from lers_ray.embeddings.base import SearchableTable
from lers_ray.embeddings.full import FullEmbedding
from lers_ray.embeddings.registry import available_methods, get_method
from lers_ray.embeddings.spec import POST_HOC, TWO_STAGE
from lers_ray.models import build_model
from lers_ray.models.graph import normalized_adjacency
from lers_ray.training.checkpoint import build_tables
from lers_ray.training.sampler import BPRSampler
from lers_ray.training.trainer import make_optimizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="data dir (default: LERS_DATA_DIR)")
    parser.add_argument("--dataset", default="gowalla", help="registered dataset name")
    parser.add_argument("--target", type=float, default=0.8, help="target sparsity")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per method")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--batch-size", type=int, default=2048, help="BPR triples per batch")
    parser.add_argument("--layers", type=int, default=3, help="LightGCN layers")
    parser.add_argument(
        "--methods", nargs="*", default=None, help="methods to time (default: all registered)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def config_for(method: str, args: argparse.Namespace) -> TrialConfig:
    """Return the trial config the timing uses: LightGCN, d = 64, default method settings."""
    return TrialConfig.from_dict(
        {
            "dataset": args.dataset,
            "backbone": {"name": "lightgcn", "dim": 64, "num_layers": args.layers},
            "training": {"batch_size": args.batch_size, "lr": 1e-3},
            "method": {"name": method, "target": 0.0 if method == "full" else args.target},
        }
    )


def tables_to_train(config: TrialConfig, data: Any) -> tuple[Any, Any, str]:
    """Return the tables a trial of this method trains, and which stage they belong to."""
    spec = get_method(config.method.name)
    settings = spec.parse_settings(config.method.settings)
    if spec.kind == POST_HOC:
        assert spec.from_trained is not None
        users, items = (
            spec.from_trained(FullEmbedding(rows, 64), config.method.target, settings)
            for rows in (data.n_users, data.n_items)
        )
        return users, items, "fine-tuning" if spec.finetune else "derived, not trained"
    if spec.kind == TWO_STAGE:
        users, items = build_tables(config, data.n_users, data.n_items, stage="search")
        return users, items, "search"
    users, items = build_tables(config, data.n_users, data.n_items)
    return users, items, "training"


def retrain_tables(users: Any, items: Any, target: float) -> tuple[Any, Any]:
    """Fix each search table's masks at the target, as the retraining stage does."""
    fixed = []
    for table in (users, items):
        assert isinstance(table, SearchableTable)
        if hasattr(table, "keep_masks"):
            fixed.append(table.fixed(table.keep_masks(target)))
        else:
            # OptEmbed keeps each row's leading dims. The training cost does not depend on
            # which dims are kept, so every row keeps the same number here.
            keep = torch.zeros(table.num_embeddings, table.dim, dtype=torch.bool)
            keep[:, : max(1, round(table.dim * (1 - target)))] = True
            fixed.append(table.fixed({"weight": keep}))
    return fixed[0], fixed[1]


def time_batches(model: Any, data: Any, args: argparse.Namespace) -> float:
    """Return seconds per batch over ``args.batches`` batches after ``args.warmup``."""
    sampler = BPRSampler(data.train, data.n_items, args.batch_size, 1, np.random.default_rng(0))
    optimizer = make_optimizer(model, 1e-3)
    model.train()
    batches = sampler.epoch()
    started = 0.0
    for index in range(args.warmup + args.batches):
        if index == args.warmup:
            started = time.perf_counter()
        users, pos, neg = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss, l2 = model.bpr_batch(users, pos, neg)
        (loss + l2).backward()
        optimizer.step()
    return (time.perf_counter() - started) / args.batches


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_dataset(config_for("full", args).dataset, data_dir=args.data_dir)
    adjacency = normalized_adjacency(data.train, data.n_users, data.n_items)
    n_batches = -(-len(data.train) // args.batch_size)
    rows: list[dict[str, Any]] = []

    for method in args.methods or available_methods():
        config = config_for(method, args)
        spec = get_method(method)
        started = time.perf_counter()
        users, items, stage = tables_to_train(config, data)
        build_seconds = time.perf_counter() - started
        stages = [(stage, users, items)]
        if spec.kind == TWO_STAGE:
            stages.append(("retraining", *retrain_tables(users, items, config.method.target)))
        for stage_name, stage_users, stage_items in stages:
            model = build_model(
                config.backbone, stage_users, stage_items, data.train, 0.0, adjacency
            )
            row: dict[str, Any] = {
                "method": method,
                "stage": stage_name,
                "build_seconds": round(build_seconds, 3),
            }
            trains = spec.kind != POST_HOC or spec.finetune
            if trains and any(p.requires_grad for p in model.parameters()):
                per_batch = time_batches(model, data, args)
                row["seconds_per_batch"] = round(per_batch, 4)
                row["seconds_per_epoch"] = round(per_batch * n_batches, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)

    report = {
        "dataset": args.dataset,
        "target": args.target,
        "batch_size": args.batch_size,
        "batches_per_epoch": n_batches,
        "timed_batches": args.batches,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "rows": rows,
    }
    print()
    print("| method | stage | s/batch | s/epoch (extrapolated) | table build (s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['stage']} | {row.get('seconds_per_batch', '-')} | "
            f"{row.get('seconds_per_epoch', 'no training')} | {row['build_seconds']} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
