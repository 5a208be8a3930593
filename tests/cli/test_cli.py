"""The lers-ray command line as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from lers_ray.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_sweep_bad_spec_names_file_and_key(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nmethods: [full]\ntrials_per_studdy: 3\n")
    assert main(["sweep", str(spec)]) == 2
    message = capsys.readouterr().err
    assert str(spec) in message
    assert "trials_per_studdy" in message
    assert "valid keys" in message


def test_sweep_invalid_yaml_names_line(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nmethods: [full\n")
    assert main(["sweep", str(spec)]) == 2
    message = capsys.readouterr().err
    assert str(spec) in message
    assert "line" in message


def test_sweep_resume_non_sweep_folder(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err


def test_export_without_results(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "not a sweep folder" in capsys.readouterr().err


def test_reproduce_rejects_non_export(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("training: {lr: 0.01}\n")
    assert main(["reproduce", str(path)]) == 2
    assert "not a lers_ray export" in capsys.readouterr().err


def test_train_config_on_ml100k(tmp_path, capsys, data_dir):
    config = {
        "dataset": {"name": "ml-100k"},
        "backbone": {"name": "lightgcn", "dim": 32, "num_layers": 2},
        "training": {"epochs": 3, "batch_size": 2048, "lr": 0.005, "num_threads": 1},
        "method": {"name": "full"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 0
    output = capsys.readouterr().out
    assert "status: completed" in output
    assert "test_ndcg_20:" in output
    assert (tmp_path / "out" / "best_model.pt").exists()


def test_train_unknown_key_names_path(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("training: {learning_rate: 0.01}\n")
    assert main(["train", str(path)]) == 2
    message = capsys.readouterr().err
    assert "training" in message
    assert "learning_rate" in message


@pytest.mark.slow
def test_quickstart_sweep_prints_best_of_every_study(tmp_path, run_cli):
    """The README's first command: the embedded default sweep, in its own process."""
    result = run_cli(["sweep", "--output-dir", str(tmp_path / "qs")], cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("study "))
    table = lines[header + 2 : header + 6]
    assert [line.split()[0] for line in table] == [
        "synthetic.lightgcn.full",
        "synthetic.lightgcn.magprune.sp50",
        "synthetic.lightgcn.magprune.sp80",
        "synthetic.lightgcn.magprune.sp95",
    ]
    # At 95% of dim 32 the row floor k is 0 or 1: two distinct configs, each tried once.
    assert [line.split()[1] for line in table] == ["4/4", "4/4", "4/4", "2/2"]
    assert (tmp_path / "qs" / "mlflow.db").exists()
    results = pd.read_parquet(tmp_path / "qs" / "results.parquet")
    assert len(results) == 14
    # The quickstart runs ASHA: stopped or not, every trial keeps its time and memory figures.
    assert results["train_seconds"].notna().all()
    assert results["peak_rss_mb"].notna().all()
    full = results[results["method"] == "full"]
    budget = 10
    patience = 3
    for _, row in full.iterrows():
        if row["stopped_early"]:
            assert row["epochs_run"] < budget, row.to_dict()
        else:
            # A trial that ends by itself reached the budget or ran out of patience.
            ended_by_patience = row["epochs_run"] - row["best_epoch"] == patience
            assert row["epochs_run"] == budget or ended_by_patience, row.to_dict()


def write_spec(path: Path, **overrides) -> Path:
    spec = {
        "name": "cli_check",
        "datasets": ["ml-100k"],
        "backbones": ["mf"],
        "methods": ["full"],
        "trials_per_study": 1,
        "epochs": 1,
        "search_space_dir": str(REPO / "search_spaces"),
    }
    spec.update(overrides)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_override_leaves_no_sweep_folder(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", overrides={"training.batch_sz": 2048})
    output = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--output-dir", str(output)]) == 2
    message = capsys.readouterr().err
    assert "batch_sz" in message
    assert "overrides" in message
    assert not output.exists()


def test_missing_data_leaves_no_sweep_folder(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml")
    output = tmp_path / "sweep"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["sweep", str(spec), "--data-dir", str(empty), "--output-dir", str(output)]) == 2
    message = capsys.readouterr().err
    assert "u.data" in message
    assert "lers-ray data fetch ml-100k" in message
    assert not output.exists()


def test_resume_rejects_output_dir(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path), "--output-dir", str(tmp_path)]) == 2
    assert "give neither SPEC nor --output-dir" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_exit_code_without_completed_trial(tmp_path, run_cli):
    spec = write_spec(
        tmp_path / "spec.yaml",
        datasets=[
            {
                "name": "synthetic",
                "synthetic": {"n_users": 200, "n_items": 300, "n_interactions": 4000},
            }
        ],
        overrides={"training.init_std": 1.0e30},
        output_dir=str(tmp_path / "sweep"),
    )
    result = run_cli(["sweep", str(spec), "--num-cpus", "1"], cwd=tmp_path)

    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "no completed trial in 1 of 1 studies: synthetic.mf.full" in result.stdout
    results = pd.read_parquet(tmp_path / "sweep" / "results.parquet")
    assert list(results["status"]) == ["failed"]
    assert "non-finite" in results["failure_reason"].iloc[0]
