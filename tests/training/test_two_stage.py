"""Two-stage methods: the retraining stage starts from the search stage's initial weights with
its masks, and the masks hold to the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lers_ray.config import TrialConfig
from lers_ray.data.dataset import InteractionData
from lers_ray.training.checkpoint import build_tables, read_checkpoint
from lers_ray.training.outcome import COMPLETED
from lers_ray.training.runner import INITIAL_WEIGHTS_FILE, MASKS_FILE, run_trial

TARGET = 0.6

# Per method: how the fixed table's state names its weights and masks, by search mask key.
FIXED_NAMES = {
    "pep": {"weight": ("weight", "mask")},
    "cerp": {"P": ("p_weight", "p_mask"), "Q": ("q_weight", "q_mask")},
}
# Per method: the search table's raw weight names, by search mask key.
SEARCH_NAMES = {"pep": {"weight": "weight"}, "cerp": {"P": "p_weight", "Q": "q_weight"}}


def config_for(method: str, epochs: int) -> TrialConfig:
    settings: dict[str, Any] = {"search_epochs": 30, "init_threshold": -3.0}
    return TrialConfig.from_dict(
        {
            "dataset": "synthetic",
            "backbone": {"name": "lightgcn", "dim": 8, "num_layers": 1},
            "training": {"epochs": epochs, "lr": 1e-2, "batch_size": 128, "seed": 3},
            "method": {"name": method, "target": TARGET, "settings": settings},
            "ks": [20],
        }
    )


def table_state(path: str, table: str) -> dict[str, torch.Tensor]:
    state = read_checkpoint(path)["state_dict"]
    prefix = f"{table}."
    return {
        key.removeprefix(prefix): value for key, value in state.items() if key.startswith(prefix)
    }


@pytest.mark.parametrize("method", ["pep", "cerp"])
def test_retraining_starts_from_initial_weights_and_keeps_masks(
    method: str, data: InteractionData, tmp_path: Path
) -> None:
    # Epochs 0: the saved model is the retraining stage's starting point, untouched.
    start = run_trial(config_for(method, epochs=0), tmp_path / "start", data=data)
    assert start.status == COMPLETED, start.failure_reason
    stage_dir = tmp_path / "start" / "stages"
    initial = torch.load(stage_dir / INITIAL_WEIGHTS_FILE, weights_only=True)
    masks = torch.load(stage_dir / MASKS_FILE, weights_only=True)

    # The saved initial weights are the search tables as built, before any update.
    torch.manual_seed(3)
    fresh = build_tables(config_for(method, 0), data.n_users, data.n_items, stage="search")
    for name, table in zip(("user_table", "item_table"), fresh, strict=True):
        for key, value in table.state_dict().items():
            assert torch.equal(initial[name][key], value), (name, key)

    assert start.checkpoint_path is not None
    for table_name in ("user_table", "item_table"):
        state = table_state(start.checkpoint_path, table_name)
        for mask_key, (weight_name, mask_name) in FIXED_NAMES[method].items():
            mask = masks[table_name][mask_key]
            raw = initial[table_name][SEARCH_NAMES[method][mask_key]]
            assert torch.equal(state[mask_name], mask)
            assert torch.equal(state[weight_name], raw * mask)
            # The search pruned something, so the mask is not trivially all ones.
            assert 0 < int(mask.sum()) < mask.numel()

    # Training after that keeps every mask and leaves masked entries at zero.
    trained = run_trial(config_for(method, epochs=3), tmp_path / "trained", data=data)
    assert trained.status == COMPLETED, trained.failure_reason
    assert trained.best_epoch > 0
    trained_masks = torch.load(tmp_path / "trained" / "stages" / MASKS_FILE, weights_only=True)
    assert trained.checkpoint_path is not None
    changed = False
    for table_name in ("user_table", "item_table"):
        state = table_state(trained.checkpoint_path, table_name)
        start_state = table_state(start.checkpoint_path, table_name)
        for mask_key, (weight_name, mask_name) in FIXED_NAMES[method].items():
            mask = trained_masks[table_name][mask_key]
            assert torch.equal(mask, masks[table_name][mask_key])
            assert torch.equal(state[mask_name], mask)
            assert bool((state[weight_name][~mask] == 0).all())
            changed |= not torch.equal(state[weight_name], start_state[weight_name])
    assert changed, "retraining did not update any kept entry"
    assert trained.metrics["sparsity"] >= TARGET
    assert trained.metrics["sparsity"] == pytest.approx(start.metrics["sparsity"])
    assert trained.metrics["search_epochs"] >= 1


def test_search_figures_are_reported(data: InteractionData, tmp_path: Path) -> None:
    outcome = run_trial(config_for("pep", epochs=1), tmp_path, data=data)
    assert outcome.status == COMPLETED
    for key in ("search_epochs", "search_reached_target", "search_sparsity", "search_seconds"):
        assert key in outcome.metrics
    assert outcome.metrics["meets_target"] == 1
    assert TARGET <= outcome.metrics["sparsity"] <= TARGET + 0.01
