"""Time LightGCN training and full-ranking evaluation on Gowalla.

Measures in one process:

- dataset load time, cold (into a fresh temporary cache) and cached;
- normalised adjacency build time;
- seconds per training epoch: full epochs by default, or ``--batches N`` extrapolated;
- seconds per validation evaluation (propagation, masking, top-K and metrics);
- a bare baseline of the same scoring: matrix product into a preallocated buffer plus top-20,
  batched by 4,096 users over all users.

Prints a Markdown table and optionally writes the figures as JSON.

Run: ``LERS_DATA_DIR=/path/to/data python benchmarks/gowalla_speed.py``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lers_ray.config import DatasetConfig, TrialConfig
from lers_ray.data import load_dataset
from lers_ray.models import build_model
from lers_ray.models.graph import normalized_adjacency
from lers_ray.training.checkpoint import build_tables
from lers_ray.training.metrics import RankingEvaluator
from lers_ray.training.sampler import BPRSampler
from lers_ray.training.trainer import make_optimizer, train_epoch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", default=None, help="data dir holding gowalla/ (default: LERS_DATA_DIR)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--epochs", type=int, default=1, help="full training epochs to time")
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="time only this many batches and extrapolate to an epoch",
    )
    parser.add_argument(
        "--eval-repeats",
        type=int,
        default=3,
        help="repeats of evaluation and of the baseline; the median is reported",
    )
    parser.add_argument("--dim", type=int, default=64, help="embedding dim")
    parser.add_argument("--layers", type=int, default=3, help="LightGCN layers")
    parser.add_argument("--batch-size", type=int, default=2048, help="BPR triples per batch")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def time_loading(data_dir: str | None) -> tuple[Any, float, float]:
    """Load Gowalla into a fresh cache and again from it; return data and both times (s)."""
    config = DatasetConfig(name="gowalla")
    with tempfile.TemporaryDirectory() as cache_dir:
        started = time.perf_counter()
        load_dataset(config, data_dir=data_dir, cache_dir=cache_dir)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        data = load_dataset(config, data_dir=data_dir, cache_dir=cache_dir)
        cached = time.perf_counter() - started
    return data, cold, cached


def time_training(model: Any, data: Any, args: argparse.Namespace) -> tuple[float, str, int]:
    """Return seconds per epoch, how it was measured, and batches per epoch."""
    sampler = BPRSampler(data.train, data.n_items, args.batch_size, 1, np.random.default_rng(0))
    optimizer = make_optimizer(model, 1e-3)
    if args.batches is None:
        times = []
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            mean_loss = train_epoch(model, sampler, optimizer, epoch)
            times.append(time.perf_counter() - started)
            failure = mean_loss if isinstance(mean_loss, str) else None
            if failure is not None:
                raise RuntimeError(f"training failed: {failure}")
        measure = f"median of {args.epochs} full epoch(s): " + ", ".join(f"{t:.1f}" for t in times)
        return statistics.median(times), measure, len(sampler)

    model.train()
    batches = sampler.epoch()
    started = time.perf_counter()
    for _ in range(args.batches):
        users, pos, neg = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss, l2 = model.bpr_batch(users, pos, neg)
        (loss + l2).backward()
        optimizer.step()
    per_batch = (time.perf_counter() - started) / args.batches
    measure = f"{args.batches} batches at {per_batch:.3f} s, extrapolated to {len(sampler)}"
    return per_batch * len(sampler), measure, len(sampler)


def time_evaluation(
    model: Any, evaluator: RankingEvaluator, repeats: int
) -> tuple[float, float, dict[str, float]]:
    """Return median seconds of propagation + evaluation, of evaluation alone, and metrics."""
    totals, scoring = [], []
    metrics: dict[str, float] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            users, items = model.final_embeddings()
        mid = time.perf_counter()
        metrics = evaluator.evaluate(users, items)
        done = time.perf_counter()
        totals.append(done - started)
        scoring.append(done - mid)
    return statistics.median(totals), statistics.median(scoring), metrics


def time_bare_topk(
    users: torch.Tensor, items: torch.Tensor, repeats: int, batch: int = 4096
) -> float:
    """Median seconds of ``users @ items.T`` into a preallocated buffer plus top-20, batched."""
    items_t = items.t().contiguous()
    buffer = torch.empty(batch, items.shape[0])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, users.shape[0], batch):
            stop = min(start + batch, users.shape[0])
            scores = buffer[: stop - start]
            torch.matmul(users[start:stop], items_t, out=scores)
            torch.topk(scores, 20, dim=1)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    data, load_cold, load_cached = time_loading(args.data_dir)
    config = TrialConfig()
    config.backbone.dim = args.dim
    config.backbone.num_layers = args.layers
    started = time.perf_counter()
    adjacency = normalized_adjacency(data.train, data.n_users, data.n_items)
    graph_seconds = time.perf_counter() - started
    user_table, item_table = build_tables(config, data.n_users, data.n_items)
    model = build_model(config.backbone, user_table, item_table, data.train, 1e-4, adjacency)

    epoch_seconds, epoch_measure, n_batches = time_training(model, data, args)
    evaluator = RankingEvaluator(data.valid, [data.train], data.n_items, [10, 20, 50], 4096)
    eval_seconds, scoring_seconds, metrics = time_evaluation(model, evaluator, args.eval_repeats)
    with torch.no_grad():
        users, items = model.final_embeddings()
    bare_seconds = time_bare_topk(users, items, args.eval_repeats)

    figures = {
        "cpu": cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "users": data.n_users,
        "items": data.n_items,
        "train_pairs": len(data.train),
        "valid_pairs": len(data.valid),
        "adjacency_nnz": int(adjacency.values().numel()),
        "load_cold_s": load_cold,
        "load_cached_s": load_cached,
        "graph_build_s": graph_seconds,
        "epoch_s": epoch_seconds,
        "epoch_measure": epoch_measure,
        "batches_per_epoch": n_batches,
        "eval_valid_s": eval_seconds,
        "eval_valid_scoring_only_s": scoring_seconds,
        "eval_users": evaluator.n_users,
        "bare_matmul_top20_s": bare_seconds,
        "eval_to_bare_ratio": eval_seconds / bare_seconds,
        "val_ndcg_20_after_timing": metrics["ndcg_20"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    rows = [
        ("dataset load, cold (parse, split, write cache)", f"{load_cold:.2f} s"),
        ("dataset load, cached", f"{load_cached:.2f} s"),
        ("normalised adjacency build", f"{graph_seconds:.2f} s"),
        (f"training epoch ({n_batches} batches)", f"{epoch_seconds:.1f} s ({epoch_measure})"),
        (
            (
                f"validation evaluation ({evaluator.n_users} users, K = 10, 20, 50), "
                "propagation included"
            ),
            f"{eval_seconds:.2f} s",
        ),
        ("  of which scoring, masking and top-K", f"{scoring_seconds:.2f} s"),
        ("bare matmul + top-20, all users, batches of 4,096", f"{bare_seconds:.2f} s"),
        ("evaluation / bare ratio", f"{eval_seconds / bare_seconds:.2f}"),
        ("peak resident memory", f"{figures['peak_rss_mb']:.0f} MiB"),
    ]
    print(
        f"{figures['cpu']}, {figures['cpu_count']} CPUs, torch {figures['torch']}, "
        f"{figures['threads']} threads"
    )
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
