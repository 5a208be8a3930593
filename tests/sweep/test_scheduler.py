"""PerStudyScheduler: ASHA decisions never compare trials of different studies."""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from lers_ray.sweep.tune_glue import SCHEDULER_METRIC, PerStudyScheduler


def make_trial(study_id: str) -> Trial:
    return Trial("train_trial", config={"study_id": study_id}, stub=True)


def report(scheduler: PerStudyScheduler, trial: Trial, epoch: int, value: float) -> str:
    return scheduler.on_trial_result(None, trial, {"epoch": epoch, SCHEDULER_METRIC: value})


def test_weak_study_not_stopped_by_strong_one():
    scheduler = PerStudyScheduler(max_t=8, grace_period=1, reduction_factor=2)
    strong = [make_trial("strong") for _ in range(3)]
    weak = make_trial("weak")
    for trial in strong + [weak]:
        scheduler.on_trial_add(None, trial)
    for value, trial in zip((0.50, 0.60, 0.70), strong):
        assert report(scheduler, trial, 1, value) == TrialScheduler.CONTINUE
    # 0.01 is far below every trial of "strong", but it is the first result of its own study.
    assert report(scheduler, weak, 1, 0.01) == TrialScheduler.CONTINUE


def test_weak_trial_stopped_within_its_study():
    scheduler = PerStudyScheduler(max_t=8, grace_period=1, reduction_factor=2)
    trials = [make_trial("one") for _ in range(4)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    for value, trial in zip((0.50, 0.60, 0.70), trials):
        report(scheduler, trial, 1, value)
    assert report(scheduler, trials[3], 1, 0.01) == TrialScheduler.STOP


def test_grace_period_capped_by_budget():
    scheduler = PerStudyScheduler(max_t=2, grace_period=5, reduction_factor=2)
    assert scheduler.grace_period == 2
