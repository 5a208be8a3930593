"""Train full-embedding LightGCN on the whole published Gowalla train file for a long run.

This is the setting of the published LightGCN figures: all of ``train.txt`` (810,128 pairs) is
used for training, with no validation carve-out, and ``test.txt`` is evaluated with train items
masked. Because there is no validation split, nothing is selected: the figures reported are
those of the last epoch, and the test curve is printed for information only.

Usage (from the repository root)::

    LERS_DATA_DIR=/path/to/data python benchmarks/gowalla_lightgcn_long.py \
        --epochs 400 --max-minutes 60 --eval-every 5 --json gowalla_long.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lers_ray.config import BackboneConfig, TrialConfig
from lers_ray.data.formats import read_lightgcn
from lers_ray.data.paths import resolve_data_dir
from lers_ray.models import build_model
from lers_ray.training.checkpoint import build_tables
from lers_ray.training.metrics import RankingEvaluator
from lers_ray.training.sampler import BPRSampler
from lers_ray.training.trainer import make_optimizer, train_epoch

logger = logging.getLogger("gowalla_lightgcn_long")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset folder (default: $LERS_DATA_DIR)")
    parser.add_argument("--epochs", type=int, default=400, help="maximum training epochs")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=60.0,
        help="stop after the first epoch that ends past this wall time (minutes)",
    )
    parser.add_argument("--eval-every", type=int, default=5, help="test evaluation interval")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight")
    parser.add_argument("--layers", type=int, default=3, help="LightGCN layers")
    parser.add_argument("--dim", type=int, default=64, help="embedding dim")
    parser.add_argument("--batch-size", type=int, default=2048, help="BPR triples per batch")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=2023, help="seed of init and sampling")
    parser.add_argument("--json", type=Path, help="also write the figures and curve here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = resolve_data_dir(args.data_dir) / "gowalla"
    train = read_lightgcn(folder / "train.txt", "gowalla")
    test = read_lightgcn(folder / "test.txt", "gowalla")
    n_users = int(max(train[:, 0].max(), test[:, 0].max())) + 1
    n_items = int(max(train[:, 1].max(), test[:, 1].max())) + 1
    logger.info(
        "train %d pairs, test %d pairs, %d users, %d items", len(train), len(test), n_users, n_items
    )

    config = TrialConfig(backbone=BackboneConfig("lightgcn", args.dim, args.layers))
    user_table, item_table = build_tables(config, n_users, n_items)
    model = build_model(config.backbone, user_table, item_table, train, args.weight_decay)
    sampler = BPRSampler(train, n_items, args.batch_size, 1, np.random.default_rng(args.seed))
    optimizer = make_optimizer(model, args.lr)
    evaluator = RankingEvaluator(test, [train], n_items, [20], batch_size=4096)

    started = time.perf_counter()
    curve = []
    epoch = 0
    last: dict[str, float] = {}
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, sampler, optimizer, epoch)
        if isinstance(loss, str):
            raise SystemExit(f"training failed: {loss}")
        elapsed = time.perf_counter() - started
        out_of_time = elapsed > args.max_minutes * 60
        if epoch % args.eval_every == 0 or epoch == args.epochs or out_of_time:
            model.eval()
            with torch.no_grad():
                users, items = model.final_embeddings()
                last = evaluator.evaluate(users, items)
            curve.append({"epoch": epoch, "minutes": elapsed / 60, "loss": loss, **last})
            logger.info(
                "epoch %d (%.1f min): loss %.4f, test Recall@20 %.4f, NDCG@20 %.4f",
                epoch,
                elapsed / 60,
                loss,
                last["recall_20"],
                last["ndcg_20"],
            )
        if out_of_time:
            break
    wall = time.perf_counter() - started
    summary = {
        "epochs": epoch,
        "wall_seconds": wall,
        "seconds_per_epoch_incl_eval": wall / epoch,
        "test_recall_20": last["recall_20"],
        "test_ndcg_20": last["ndcg_20"],
        "settings": vars(args) | {"data_dir": str(folder), "json": str(args.json)},
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "curve": curve,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
