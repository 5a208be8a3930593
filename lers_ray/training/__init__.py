"""BPR training, full-ranking evaluation and the trial entry point."""

from lers_ray.training.metrics import RankingEvaluator
from lers_ray.training.outcome import TrialOutcome
from lers_ray.training.runner import run_trial

__all__ = ["RankingEvaluator", "TrialOutcome", "run_trial"]
