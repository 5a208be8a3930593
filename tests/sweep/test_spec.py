from __future__ import annotations

from pathlib import Path

import pytest

from lers_ray.config import ConfigError
from lers_ray.sweep.runner import split_infeasible
from lers_ray.sweep.spec import build_studies, load_sweep_spec, parse_sweep_spec

REPO = Path(__file__).resolve().parents[2]


def test_spec_short_forms():
    spec = parse_sweep_spec({"datasets": ["ml-100k"], "backbone": "mf", "methods": ["full"]})
    assert spec.datasets[0].name == "ml-100k"
    assert spec.backbones == ["mf"]


def test_studies_one_per_group():
    spec = load_sweep_spec(REPO / "search_spaces" / "sweeps" / "ml100k_cf.yaml")
    studies = build_studies(spec)
    ids = [study.study_id for study in studies]
    assert ids == [
        "ml-100k.lightgcn.full",
        "ml-100k.lightgcn.magprune.sp50",
        "ml-100k.lightgcn.magprune.sp80",
        "ml-100k.lightgcn.magprune.sp95",
    ]
    assert all(study.n_trials >= 8 for study in studies)
    for study in studies[1:]:
        assert study.depends_on == "ml-100k.lightgcn.full"
        # A post-hoc study keeps the full model's backbone settings: only its own knob is searched.
        assert [p.path for p in study.space.params] == ["method.settings.row_floor_k"]
    assert "training.lr" in [p.path for p in studies[0].space.params]


def test_override_removes_searched_parameter():
    spec = parse_sweep_spec(
        {
            "methods": ["full"],
            "overrides": {"training.lr": 0.01},
            "search_space_dir": str(REPO / "search_spaces"),
        }
    )
    (study,) = build_studies(spec)
    assert "training.lr" not in [p.path for p in study.space.params]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"methods": ["magprunee"]}, "unknown method 'magprunee'"),
        ({"backbones": ["ncf"]}, "unknown backbone 'ncf'"),
        ({"targets": [80]}, "targets: 80"),
        ({"trials_per_study": 0}, "trials_per_study"),
        ({"epochs": "ten"}, "epochs: expected an integer"),
        ({"resources_per_trial": {"tpu": 1}}, "unknown key(s) ['tpu']"),
        ({"resources_per_trial": {"cpu": 1, "gpu": 1}}, "CPU only"),
        ({"trials": 3}, "unknown key(s) 'trials'"),
        ({"datasets": ["ml-100k", "ml-100k"]}, "duplicate dataset"),
        ({"datasets": ["ml100k"]}, "unknown dataset 'ml100k'"),
        ({"targets": [0.8, 0.8]}, "duplicate target"),
        ({"method_overrides": {"pep": {"x": 1}}}, "method_overrides: 'pep' is not in methods"),
        (
            {"methods": ["full", "pep"], "method_overrides": {"pep": 3}},
            "method_overrides.pep: expected a mapping",
        ),
        ({"edge": {"when_missing": "wait"}}, "edge.when_missing: 'wait' is not one of"),
        ({"edge": {"trials": "top3"}}, "edge.trials: 'top3' is not one of best, all"),
        ({"edge": {"repeats": 0}}, "edge.repeats must be at least 1"),
        ({"edge": {"timeout_s": 0}}, "edge.timeout_s must be positive"),
        ({"edge": {"timeout": 5}}, "unknown key(s) 'timeout'"),
    ],
)
def test_spec_errors_name_key(data, fragment):
    with pytest.raises(ConfigError) as error:
        parse_sweep_spec(data, source="spec.yaml")
    assert fragment in str(error.value)
    assert "spec.yaml" in str(error.value)


def test_method_override_applies_to_its_method_only():
    spec = parse_sweep_spec(
        {
            "methods": ["full", "magprune+ft"],
            "targets": [0.8],
            "overrides": {"training.batch_size": 512},
            "method_overrides": {"magprune+ft": {"method.settings.finetune_lr": 0.002}},
            "search_space_dir": str(REPO / "search_spaces"),
        }
    )
    studies = {study.method: study for study in build_studies(spec)}
    assert "method.settings.finetune_lr" not in [
        p.path for p in studies["magprune+ft"].space.params
    ]
    assert spec.overrides_for("magprune+ft") == {
        "training.batch_size": 512,
        "method.settings.finetune_lr": 0.002,
    }
    assert spec.overrides_for("full") == {"training.batch_size": 512}


def test_infeasible_studies_are_split_off():
    spec = parse_sweep_spec(
        {
            "methods": ["full", "ptq", "qr"],
            "targets": [0.5, 0.95],
            "search_space_dir": str(REPO / "search_spaces"),
        }
    )
    studies = build_studies(spec)
    for study in studies:
        study.table_rows = (29858, 40981)
    runnable, skipped = split_infeasible(studies, spec.dim)
    expected = [s.study_id for s in studies if s.method == "ptq" and s.target == 0.95]
    assert list(skipped) == expected
    (reason,) = skipped.values()
    assert "0.84375" in reason
    assert len(runnable) == len(studies) - 1


def test_post_hoc_method_needs_full():
    spec = parse_sweep_spec(
        {"methods": ["magprune"], "search_space_dir": str(REPO / "search_spaces")}
    )
    with pytest.raises(ConfigError, match="'full' must be in methods"):
        build_studies(spec)


def test_missing_space_file_named(tmp_path):
    spec = parse_sweep_spec({"methods": ["full"], "search_space_dir": str(tmp_path)})
    with pytest.raises(ConfigError) as error:
        build_studies(spec)
    assert str(tmp_path / "backbones" / "lightgcn.yaml") in str(error.value)


def test_repository_sweep_specs_parse():
    for path in sorted((REPO / "search_spaces" / "sweeps").glob("*.yaml")):
        assert build_studies(load_sweep_spec(path))
