"""Real sweeps on a local Ray cluster: failure handling, CI-sized real-data sweeps, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from lers_ray.sweep.export import export_best_configs, reproduce
from lers_ray.sweep.results import read_results
from lers_ray.sweep.runner import run_sweep
from lers_ray.sweep.spec import load_sweep_spec, parse_sweep_spec

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "search_spaces" / "sweeps"
SMALL_SYNTHETIC = {
    "name": "synthetic",
    "synthetic": {"n_users": 300, "n_items": 400, "n_interactions": 6000, "seed": 1},
}


def write_spaces(folder: Path, backbone_params: dict) -> Path:
    (folder / "backbones").mkdir(parents=True)
    (folder / "methods").mkdir()
    (folder / "backbones" / "mf.yaml").write_text(yaml.safe_dump({"params": backbone_params}))
    (folder / "methods" / "full.yaml").write_text("params: {}\n")
    return folder


def test_nan_trial_fails_while_study_finishes(tmp_path, ray_session):
    # init_std 1e30 overflows float32 scores, so BPR's loss really becomes NaN.
    spaces = write_spaces(
        tmp_path / "spaces",
        {
            "training.init_std": {"type": "categorical", "choices": [0.1, 1.0e30]},
        },
    )
    spec = parse_sweep_spec(
        {
            "name": "nan_check",
            "datasets": [SMALL_SYNTHETIC],
            "backbones": ["mf"],
            "methods": ["full"],
            "trials_per_study": 6,
            "epochs": 3,
            "patience": 0,
            "dim": 16,
            "seed": 7,
            "search_space_dir": str(spaces),
            "output_dir": str(tmp_path / "sweep"),
            "early_stopping": {"enabled": False},
        }
    )
    outcome = run_sweep(spec)

    assert outcome.complete
    (study,) = outcome.studies
    # Two distinct configs: the grid sampler tries each once instead of repeating them.
    assert study["planned"] == 2
    assert study["finished"] == 2
    results = read_results(outcome.sweep_dir)
    assert len(results) == 2
    failed = results[results["status"] == "failed"]
    completed = results[results["status"] == "completed"]
    assert len(failed) == 1
    assert len(completed) == 1
    for _, row in failed.iterrows():
        assert "non-finite" in row["failure_reason"]
        assert json.loads(row["config"])["training"]["init_std"] == 1.0e30
    for _, row in completed.iterrows():
        assert math.isfinite(row["val_ndcg_20"])
    # The failure is an explicit record in MLflow too, never a silently dropped trial.
    client = MlflowClient(outcome.tracking_uri)
    for _, row in failed.iterrows():
        run = client.get_run(row["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert "non-finite" in run.data.tags["failure_reason"]
    assert study["best_trial"] in set(completed["trial_number"])


@pytest.fixture(scope="module")
def ml100k_sweep(tmp_path_factory, ray_session):
    spec = load_sweep_spec(SWEEPS / "ml100k_cf_ci.yaml")
    spec.output_dir = str(tmp_path_factory.mktemp("ml100k") / "sweep")
    return run_sweep(spec)


def test_ml100k_ci_sweep_runs_every_study(ml100k_sweep):
    assert ml100k_sweep.complete
    studies = {row["study"]: row for row in ml100k_sweep.studies}
    assert set(studies) == {
        "ml-100k.lightgcn.full",
        "ml-100k.lightgcn.magprune.sp50",
        "ml-100k.lightgcn.magprune.sp80",
        "ml-100k.lightgcn.magprune.sp95",
    }
    for study_id, row in studies.items():
        assert row["finished"] == row["planned"] == 2, study_id
        assert row["failed"] == 0, study_id
        assert row["val_ndcg_20"] > 0.05, study_id
        assert row["test_ndcg_20"] > 0.05, study_id
    for target in (0.5, 0.8, 0.95):
        row = studies[f"ml-100k.lightgcn.magprune.sp{round(target * 100)}"]
        assert target <= row["sparsity"] <= target + 0.01
    assert studies["ml-100k.lightgcn.full"]["sparsity"] == 0.0
    # The local cluster binds loopback only.
    assert set(read_results(ml100k_sweep.sweep_dir)["node_ip"]) == {"127.0.0.1"}


def test_ml100k_magprune_starts_from_best_full(ml100k_sweep):
    results = read_results(ml100k_sweep.sweep_dir)
    full = results[results["method"] == "full"]
    best_full = full.sort_values("val_ndcg_20", ascending=False).iloc[0]
    for _, row in results[results["method"] == "magprune"].iterrows():
        config = json.loads(row["config"])
        assert config["base_checkpoint"] == str(Path(best_full["trial_dir"]) / "best_model.pt")
        assert config["backbone"] == json.loads(best_full["config"])["backbone"]
        assert row["split_fingerprint"] == best_full["split_fingerprint"]


def test_ml100k_magprune_waits_for_full_study(ml100k_sweep):
    storage = f"sqlite:///{ml100k_sweep.sweep_dir / 'optuna.db'}"
    full = optuna.load_study(study_name="ml-100k.lightgcn.full", storage=storage)
    last_full = max(trial.datetime_complete for trial in full.trials)
    for target in ("50", "80", "95"):
        pruned = optuna.load_study(
            study_name=f"ml-100k.lightgcn.magprune.sp{target}", storage=storage
        )
        assert len(pruned.trials) == 2
        assert min(trial.datetime_start for trial in pruned.trials) >= last_full


def test_export_then_reproduce_round_trip(ml100k_sweep, tmp_path):
    files = export_best_configs(ml100k_sweep.sweep_dir, tmp_path / "export")
    assert sorted(f.name for f in files) == [
        "ml-100k.lightgcn.full.yaml",
        "ml-100k.lightgcn.magprune.sp50.yaml",
        "ml-100k.lightgcn.magprune.sp80.yaml",
        "ml-100k.lightgcn.magprune.sp95.yaml",
    ]
    document = yaml.safe_load(files[2].read_text())
    assert "params" not in document["config"]  # resolved values only, no search space
    assert document["config"]["base_checkpoint"] is None  # self-contained
    assert document["config"]["base"]["method"]["name"] == "full"
    assert document["sparsity"]["target"] == 0.8
    assert 0.8 <= document["sparsity"]["achieved"] <= 0.81
    assert document["seed"] == 2023
    assert isinstance(document["best_epoch"], int)
    assert document["sparsity"]["params_full"] == (943 + 1682) * 64
    assert isinstance(document["sparsity"]["params_stored"], int)
    assert document["split_fingerprint"]
    assert set(document["metrics"]["test"]) >= {"recall_20", "ndcg_20"}
    assert "torch" in document["versions"]

    for path in (files[0], files[2]):
        result = reproduce(path, tmp_path / f"repro-{path.stem}", tolerance=0.02)
        assert result.fingerprint_matches
        assert result.passed, result.rows
        assert result.test_ndcg_relative_difference <= 0.02


def test_reproduce_detects_difference(ml100k_sweep, tmp_path):
    (path,) = [
        p
        for p in export_best_configs(ml100k_sweep.sweep_dir, tmp_path / "export")
        if p.name == "ml-100k.lightgcn.full.yaml"
    ]
    document = yaml.safe_load(path.read_text())
    document["metrics"]["test"]["ndcg_20"] *= 1.5
    path.write_text(yaml.safe_dump(document))
    result = reproduce(path, tmp_path / "repro", tolerance=0.02)
    assert not result.passed
    assert result.test_ndcg_relative_difference > 0.3


def test_gowalla_ci_sweep(tmp_path, ray_session, data_dir):
    spec = load_sweep_spec(SWEEPS / "gowalla_ci.yaml")
    spec.output_dir = str(tmp_path / "sweep")
    outcome = run_sweep(spec)
    assert outcome.complete
    results = read_results(outcome.sweep_dir)
    assert list(results["status"]) == ["completed", "completed"]
    full = results[results["method"] == "full"].iloc[0]
    pruned = results[results["method"] == "magprune"].iloc[0]
    assert full["params_full"] == (29858 + 40981) * 64
    assert 0.8 <= pruned["sparsity"] <= 0.81
    # Two MF epochs on real Gowalla already rank far above chance (about 0.0005 NDCG@20).
    assert full["test_ndcg_20"] > 0.01
    assert isinstance(results, pd.DataFrame)
