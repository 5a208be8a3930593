"""Measure the edge artifact of every method and target: size, load time, memory, latency.

For each dataset, method and target sparsity, the script gets a model and writes its edge
artifact (``lers_ray.edge.export``) into ``--out``:

- **trained**: the best completed trial of that study in one of the ``--sweep`` folders. Its
  checkpoint is exported with ``export_edge_artifact``; the sweep folder is only read.
- **untrained, same structure**: when no sweep has that study, the method's finished tables are
  built for the dataset and target without training. Post-hoc methods derive them from the
  trained full model of that dataset. Methods that train get fresh tables
  (``MethodSpec.create``). Two-stage methods fix masks on a fresh search table: PEP and CERP
  keep ``keep_masks(target)``, and OptEmbed keeps one random candidate of its evolutionary
  search, repaired to the target's budget. The artifact size and the query latency depend on
  this structure, not on the trained values.
- **infeasible**: the method has no structure that reaches the target (PTQ at 0.95).

Each artifact is measured with ``lers_ray.edge.bench.run_isolated``: one fresh Python process
at a time, with the dataset's graph artifact. The results go to ``edge_latency.json`` (written
after every measurement) and ``edge_latency.md`` in ``--out``.

Run: ``LERS_DATA_DIR=/path/to/data python benchmarks/edge_latency.py --sweep runs/ml100k_all
--out edge_bench``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lers_ray.config import ConfigError, TrialConfig
from lers_ray.data import load_dataset
from lers_ray.data.dataset import InteractionData
from lers_ray.edge.bench import BenchError, node_tags, run_isolated
from lers_ray.edge.export import GRAPH_FILE, write_graph_artifact, write_model_artifact
from lers_ray.edge.options import BenchOptions
from lers_ray.embeddings.accounting import count_parameters
from lers_ray.embeddings.base import (
    EmbeddingTable,
    SoftThresholdTable,
    StructureInfeasible,
)
from lers_ray.embeddings.optembed import OptEmbedSupernet, dim_mask
from lers_ray.embeddings.registry import get_method
from lers_ray.embeddings.spec import POST_HOC, TWO_STAGE
from lers_ray.models import CFModel, build_model
from lers_ray.sweep.results import best_row, read_results
from lers_ray.training.checkpoint import build_tables, load_checkpoint
from lers_ray.training.optembed_search import TableBudget
from lers_ray.training.runner import export_edge_artifact

logger = logging.getLogger("edge_latency")

DATASETS = ("ml-100k", "gowalla")
METHODS = (
    "full",
    "magprune",
    "magprune+ft",
    "random_prune",
    "ptq",
    "qr",
    "ttrec",
    "dhe",
    "pep",
    "cerp",
    "optembed",
)
TARGETS = (0.5, 0.8, 0.95)
TRAINED = "trained"
UNTRAINED = "untrained, same structure"
MEASURED = "measured"
INFEASIBLE = "infeasible"
FAILED = "failed"
UNAVAILABLE = "unavailable"
SEED = 0
"""Seed of the untrained tables and of OptEmbed's random candidate."""


@dataclass
class TrainedTrial:
    """The best completed trial of one study in a sweep folder."""

    sweep: str
    study_id: str
    trial_number: int
    trial_dir: str
    config: TrialConfig
    val_ndcg_20: float
    artifact_bytes: int
    params_stored: int


@dataclass
class Row:
    """One (dataset, method, target) of the benchmark and everything measured for it."""

    dataset: str
    method: str
    target: float
    status: str = ""
    """``measured``, ``infeasible``, ``failed`` or ``unavailable`` (no model to build from)."""
    source: str = ""
    """``trained`` or ``untrained, same structure``."""
    reason: str = ""
    num_layers: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    settings_source: str = ""
    trial: dict[str, Any] = field(default_factory=dict)
    """Sweep, study, trial number and folder, validation NDCG@20 (trained rows)."""
    params_stored: int | None = None
    params_full: int | None = None
    artifact_path: str = ""
    artifact_bytes: int | None = None
    sweep_artifact_bytes: int | None = None
    """The trial's ``artifact_bytes`` in the sweep's results, to compare with this export."""
    load_average_before: list[float] = field(default_factory=list)
    load_average_after: list[float] = field(default_factory=list)
    measure_seconds: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def target_key(target: float) -> float:
    """Return ``target`` rounded so that 0.8 from YAML and from the command line compare equal."""
    return round(float(target), 4)


def collect_trained(sweeps: list[Path]) -> dict[tuple[str, str, float], TrainedTrial]:
    """Return the best completed trial of every study in ``sweeps``, by (dataset, method, target).

    When several sweeps have the same study, the one given last wins.

    Raises:
        FileNotFoundError: if a sweep folder has no ``results.parquet``.
    """
    trained: dict[tuple[str, str, float], TrainedTrial] = {}
    for sweep in sweeps:
        frame = read_results(sweep)
        completed = frame[frame["status"] == "completed"]
        for study_id, group in completed.groupby("study_id"):
            row = best_row(group)
            key = (str(row["dataset"]), str(row["method"]), target_key(row["sparsity_target"]))
            if key in trained:
                logger.info("%s: using %s instead of %s", study_id, sweep, trained[key].sweep)
            config = TrialConfig.from_dict(
                json.loads(row["config"]), source=f"{sweep}: study {study_id} config"
            )
            trained[key] = TrainedTrial(
                sweep=str(sweep),
                study_id=str(study_id),
                trial_number=int(row["trial_number"]),
                trial_dir=str(row["trial_dir"]),
                config=config,
                val_ndcg_20=float(row["val_ndcg_20"]),
                artifact_bytes=int(row["artifact_bytes"]),
                params_stored=int(row["params_stored"]),
            )
    return trained


def artifact_name(method: str, target: float) -> str:
    """Return the artifact file name of a method at a target, e.g. ``magprune.sp80.lers``."""
    if method == "full":
        return "full.lers"
    return f"{method}.sp{round(target * 100):02d}.lers"


def settings_candidates(
    trained: dict[tuple[str, str, float], TrainedTrial], dataset: str, method: str, target: float
) -> list[tuple[dict[str, Any], str]]:
    """Return the method settings to try for an untrained structure, best first, with a label.

    The order: the method's best trained trial on this dataset at the nearest target, then at
    this target on another dataset, then the defaults. Settings such as MagPrune's row floor or
    DHE's hash count shape the structure, so a trained trial's choice is the closest stand-in.
    """
    same_dataset = [
        (abs(key[2] - target), key[2], trial)
        for key, trial in trained.items()
        if key[0] == dataset and key[1] == method
    ]
    same_target = [
        trial
        for key, trial in sorted(trained.items())
        if key[0] != dataset and key[1] == method and key[2] == target_key(target)
    ]
    candidates: list[tuple[dict[str, Any], str]] = []
    for _, _, trial in sorted(same_dataset, key=lambda item: (item[0], item[1])):
        candidates.append((dict(trial.config.method.settings), f"{trial.study_id} (trained)"))
    for trial in same_target:
        candidates.append((dict(trial.config.method.settings), f"{trial.study_id} (trained)"))
    candidates.append(({}, "defaults"))
    return candidates


def optembed_fixed(table: OptEmbedSupernet, target: float, seed: int) -> EmbeddingTable:
    """Fix the dimension mask of one random, budget-repaired candidate of OptEmbed's search.

    The budget comes from the table's row norms and threshold, as after supernet training, so
    the masked table stores exactly the entries the target allows.
    """
    budget = TableBudget.build(
        table.row_norms(), float(table.threshold.detach()), table.dim, target
    )
    generator = torch.Generator().manual_seed(seed)
    counts = budget.repair(budget.sample(budget.n_kept, generator), generator)
    return table.fixed({"weight": dim_mask(budget.full_dims(counts), table.dim)})


def untrained_tables(
    config: TrialConfig, data: InteractionData, base: CFModel | None
) -> tuple[EmbeddingTable, EmbeddingTable]:
    """Build the finished tables of ``config``'s method without training them.

    Raises:
        StructureInfeasible: when the method cannot reach the target with these settings.
        ValueError: when the settings do not fit the table (for example a row floor too high),
            or a post-hoc method gets no trained full model as ``base``.
    """
    spec = get_method(config.method.name)
    settings = spec.parse_settings(config.method.settings)
    target = config.method.target
    torch.manual_seed(SEED)
    if spec.kind == POST_HOC:
        if base is None:
            raise ValueError(
                f"{config.method.name} needs the trained full model of {data.name}, but none "
                "was given"
            )
        assert spec.from_trained is not None
        return (
            spec.from_trained(base.user_table, target, settings),
            spec.from_trained(base.item_table, target, settings),
        )
    if spec.kind == TWO_STAGE:
        search_tables = build_tables(config, data.n_users, data.n_items, stage="search")
        fixed: list[EmbeddingTable] = []
        for offset, table in enumerate(search_tables):
            if isinstance(table, SoftThresholdTable):
                fixed.append(table.fixed(table.keep_masks(target)))
            elif isinstance(table, OptEmbedSupernet):
                fixed.append(optembed_fixed(table, target, SEED + offset))
            else:
                raise TypeError(
                    f"{config.method.name}: no rule to fix the masks of {type(table).__name__}"
                )
        return fixed[0], fixed[1]
    return build_tables(config, data.n_users, data.n_items)


def check_feasible(method: str, data: InteractionData, dim: int, target: float) -> str | None:
    """Return why the method cannot reach ``target`` for this dataset's tables, or None."""
    check = get_method(method).check_feasible
    if check is None:
        return None
    try:
        for rows in (data.n_users, data.n_items):
            check(rows, dim, target)
    except StructureInfeasible as error:
        return str(error)
    return None


@dataclass
class DatasetContext:
    """Shared inputs of one dataset's rows: data, base model, backbone and output folder."""

    name: str
    data: InteractionData
    template: TrialConfig
    """Dataset and backbone of the untrained rows: those of the trained full model, if any."""
    base: CFModel | None
    out_dir: Path
    graph_path: Path


def prepare_trained(row: Row, trial: TrainedTrial, context: DatasetContext) -> None:
    """Export the trained trial's checkpoint into the output folder and fill ``row``."""
    path = context.out_dir / artifact_name(row.method, row.target)
    checkpoint = Path(trial.trial_dir) / "best_model.pt"
    row.source = TRAINED
    row.num_layers = trial.config.backbone.num_layers
    row.settings = dict(trial.config.method.settings)
    row.settings_source = f"{trial.study_id} (trained)"
    row.trial = {
        "sweep": trial.sweep,
        "study_id": trial.study_id,
        "trial_number": trial.trial_number,
        "trial_dir": trial.trial_dir,
        "val_ndcg_20": trial.val_ndcg_20,
    }
    row.params_stored = trial.params_stored
    row.sweep_artifact_bytes = trial.artifact_bytes
    row.artifact_bytes = export_edge_artifact(trial.config, checkpoint, context.data, path)
    row.artifact_path = str(path)
    if row.artifact_bytes != trial.artifact_bytes:
        logger.info(
            "%s: exported artifact has %d bytes; the sweep's results record %d",
            trial.study_id,
            row.artifact_bytes,
            trial.artifact_bytes,
        )


def prepare_untrained(
    row: Row, context: DatasetContext, trained: dict[tuple[str, str, float], TrainedTrial]
) -> None:
    """Build the method's structure without training, write its artifact and fill ``row``.

    Each settings candidate (:func:`settings_candidates`) is tried in turn; one that cannot
    reach the target is logged and skipped. When none fits, the row is ``infeasible``.
    """
    if get_method(row.method).kind == POST_HOC and context.base is None:
        row.status = UNAVAILABLE
        row.reason = (
            f"{row.method} derives its tables from a trained full model, but no --sweep has a "
            f"completed full study of {row.dataset}"
        )
        logger.warning("%s %s %s: %s", *_row_id(row), row.reason)
        return
    errors: list[str] = []
    for settings, label in settings_candidates(trained, row.dataset, row.method, row.target):
        payload = context.template.to_dict()
        payload["method"] = {"name": row.method, "target": row.target, "settings": settings}
        payload["base"] = None
        payload["base_checkpoint"] = None
        config = TrialConfig.from_dict(payload, source=f"{row.dataset} {row.method} config")
        try:
            user_table, item_table = untrained_tables(config, context.data, context.base)
        except ValueError as error:
            logger.warning("%s %s %s: settings of %s: %s", *_row_id(row), label, error)
            errors.append(f"settings of {label}: {error}")
            continue
        adjacency = getattr(context.base, "adjacency", None)
        model = build_model(
            config.backbone,
            user_table,
            item_table,
            context.data.train,
            config.training.weight_decay,
            adjacency,
        )
        path = context.out_dir / artifact_name(row.method, row.target)
        row.artifact_bytes = write_model_artifact(
            path,
            model,
            method=row.method,
            target=row.target,
            dataset=context.data.name,
            fingerprint=context.data.fingerprint,
        )
        counts = count_parameters(model.tables())
        row.source = UNTRAINED
        row.num_layers = config.backbone.num_layers
        row.settings = settings
        row.settings_source = label
        row.params_stored = counts.params_stored
        row.params_full = counts.params_full
        row.artifact_path = str(path)
        return
    row.status = INFEASIBLE
    row.reason = "; ".join(errors)


def _row_id(row: Row) -> tuple[str, str, str]:
    return row.dataset, row.method, "full" if row.method == "full" else f"{row.target:.2f}"


def measure_row(row: Row, context: DatasetContext, options: BenchOptions, timeout_s: float) -> None:
    """Measure ``row``'s artifact in a fresh process and store the figures (or the failure)."""
    row.load_average_before = list(os.getloadavg())
    started = time.perf_counter()
    try:
        result = run_isolated(row.artifact_path, context.graph_path, options, timeout_s)
    except BenchError as error:
        row.status = FAILED
        row.reason = str(error)
        logger.error("%s %s %s: measurement failed: %s", *_row_id(row), error)
        return
    finally:
        row.measure_seconds = time.perf_counter() - started
        row.load_average_after = list(os.getloadavg())
    row.status = MEASURED
    row.metrics = result["metrics"]
    row.tags = result["tags"]
    logger.info(
        "%s %s %s: %d bytes, per-query p50 %.2f ms, precomputed p50 %.3f ms (%.0f s)",
        *_row_id(row),
        row.artifact_bytes,
        row.metrics["edge.per_query.p50_ms"],
        row.metrics["edge.precomputed.p50_ms"],
        row.measure_seconds,
    )


def open_dataset(
    name: str,
    trained: dict[tuple[str, str, float], TrainedTrial],
    out: Path,
    data_dir: str | None,
) -> DatasetContext:
    """Load the dataset with the split its trained trials used and write its graph artifact."""
    full = trained.get((name, "full", 0.0))
    any_trial = next((t for key, t in sorted(trained.items()) if key[0] == name), None)
    if full is not None:
        template = full.config
    elif any_trial is not None:
        template = any_trial.config
    else:
        logger.warning(
            "no --sweep has trials of %s, so the default split and LightGCN settings are used",
            name,
        )
        template = TrialConfig.from_dict({"dataset": name})

    data = load_dataset(template.dataset, data_dir=data_dir)
    out_dir = out / name
    out_dir.mkdir(parents=True, exist_ok=True)
    graph_path = out_dir / GRAPH_FILE
    graph_bytes = write_graph_artifact(graph_path, data)
    logger.info(
        "%s: %d users, %d items, %d train pairs; graph artifact %d bytes",
        name,
        data.n_users,
        data.n_items,
        len(data.train),
        graph_bytes,
    )

    base = None
    if full is not None:
        base, _ = load_checkpoint(Path(full.trial_dir) / "best_model.pt", data)
    return DatasetContext(name, data, template, base, out_dir, graph_path)


def run_dataset(
    context: DatasetContext,
    args: argparse.Namespace,
    trained: dict[tuple[str, str, float], TrainedTrial],
    rows: list[Row],
    write: Callable[[], None],
) -> None:
    """Prepare and measure every method and target of one dataset, appending to ``rows``."""
    options = BenchOptions.from_args(args)
    dim = context.template.backbone.dim
    for method in args.methods:
        targets = [0.0] if method == "full" else [target_key(t) for t in args.targets]
        for target in targets:
            row = Row(context.name, method, target)
            rows.append(row)
            reason = check_feasible(method, context.data, dim, target) if target else None
            trial = trained.get((context.name, method, target))
            if reason is not None:
                row.status = INFEASIBLE
                row.reason = reason
                logger.warning("%s %s %s: infeasible: %s", *_row_id(row), reason)
            elif trial is not None:
                try:
                    prepare_trained(row, trial, context)
                except (ConfigError, OSError) as error:
                    row.status = FAILED
                    row.reason = f"export of {trial.trial_dir} failed: {error}"
                    logger.error("%s %s %s: %s", *_row_id(row), row.reason)
            else:
                prepare_untrained(row, context, trained)
            if not row.status:
                logger.info("%s %s %s: measuring (%s)", *_row_id(row), row.source)
                measure_row(row, context, options, args.timeout)
            write()


def _bytes(value: float | None) -> str:
    return "" if value is None else f"{int(value):,}"


def markdown_table(rows: list[Row], dataset: str) -> str:
    """Return the Markdown table of one dataset's rows."""
    full = next((r for r in rows if r.dataset == dataset and r.method == "full"), None)
    full_bytes = full.artifact_bytes if full is not None else None
    header = (
        "| method | target | model | layers | artifact bytes | compression vs full | per-query p50 / p95 ms "
        "| precomputed p50 / p95 ms | load ms | peak RSS MiB load / per-query / precomputed |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.dataset != dataset:
            continue
        target = "-" if row.method == "full" else f"{row.target:.2f}"
        if row.status in (INFEASIBLE, UNAVAILABLE):
            lines.append(f"| {row.method} | {target} | {row.status} | | | | | | | |")
            continue
        ratio = ""
        if full_bytes and row.artifact_bytes:
            ratio = f"{full_bytes / row.artifact_bytes:.2f}x"
        model = "trained" if row.source == TRAINED else "untrained"
        if row.status != MEASURED:
            lines.append(
                f"| {row.method} | {target} | {model} | {row.num_layers} | "
                f"{_bytes(row.artifact_bytes)} | {ratio} | failed | | | |"
            )
            continue
        m = row.metrics
        lines.append(
            f"| {row.method} | {target} | {model} | {row.num_layers} | "
            f"{_bytes(row.artifact_bytes)} | {ratio} | "
            f"{m['edge.per_query.p50_ms']:.2f} / {m['edge.per_query.p95_ms']:.2f} | "
            f"{m['edge.precomputed.p50_ms']:.3f} / {m['edge.precomputed.p95_ms']:.3f} | "
            f"{m['edge.load_ms']:.1f} | {m['edge.load_peak_rss_mb']:.0f} / "
            f"{m['edge.per_query.peak_rss_mb']:.0f} / {m['edge.precomputed.peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="dataset names")
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), help="methods (default: all)"
    )
    parser.add_argument(
        "--targets", nargs="+", type=float, default=list(TARGETS), help="target sparsities"
    )
    parser.add_argument(
        "--sweep",
        action="append",
        type=Path,
        default=[],
        help="a sweep folder with trained studies (repeatable; for a study in several, the "
        "last one given wins)",
    )

    parser.add_argument("--out", type=Path, required=True, help="folder for artifacts and results")
    BenchOptions.add_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds before one measurement is stopped and recorded as failed",
    )
    parser.add_argument("--data-dir", default=None, help="data dir (default: LERS_DATA_DIR)")

    args = parser.parse_args(argv)
    for method in args.methods:
        try:
            get_method(method)
        except ConfigError as error:
            parser.error(f"--methods: {error}")
    out = args.out.resolve()
    for sweep in args.sweep:
        if sweep.resolve() == out or sweep.resolve() in out.parents:
            parser.error(f"--out {args.out} is inside --sweep {sweep}; choose another folder")
    for target in args.targets:
        if not 0.0 < target < 1.0:
            parser.error(f"--targets: {target} is outside (0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``edge_latency.json`` and ``edge_latency.md``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    trained = collect_trained(args.sweep)
    rows: list[Row] = []
    header: dict[str, Any] = {
        "command": [Path(sys.executable).name, *sys.argv],
        "options": vars(BenchOptions.from_args(args)),
        "machine": node_tags(),
        "load_average_start": list(os.getloadavg()),
    }
    json_path = args.out / "edge_latency.json"

    def write() -> None:
        payload = {**header, "rows": [asdict(row) for row in rows]}
        json_path.write_text(json.dumps(payload, indent=1, default=str))

    started = time.perf_counter()
    for name in args.datasets:
        context = open_dataset(name, trained, args.out, args.data_dir)
        run_dataset(context, args, trained, rows, write)
        # Free this dataset's data and base model before the next one is loaded.
        del context
    header["load_average_end"] = list(os.getloadavg())
    header["seconds"] = time.perf_counter() - started
    write()
    markdown = "".join(f"## {name}\n\n{markdown_table(rows, name)}\n" for name in args.datasets)
    (args.out / "edge_latency.md").write_text(markdown)
    print(markdown)
    logger.info("wrote %s and edge_latency.md in %.0f s", json_path, header["seconds"])
    return 0 if all(row.status != FAILED for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
