"""What people do to experiments and trials: create, pause, resume, cancel, stop by hand."""

from __future__ import annotations

from typing import Any

from tuner.config import ExperimentConfig, parse_config
from tuner.coordinator.outcomes import Context, close_trial
from tuner.domain import Experiment, ExperimentState, Reason, Trial, TrialState
from tuner.errors import InvalidTransition
from tuner.store import Store


def create_experiment(store: Store, document: Any, now: float) -> Experiment:
    """Validate an experiment document and store it (raises ConfigError naming the field)."""
    config: ExperimentConfig = parse_config(document)
    from tuner.config import build_scheduler

    build_scheduler(config)  # a rule that cannot be built is a config error now, not later
    return store.create_experiment(config, now)


_MOVES = {
    "pause": ({ExperimentState.RUNNING}, ExperimentState.PAUSED),
    "resume": ({ExperimentState.PAUSED}, ExperimentState.RUNNING),
    "cancel": ({ExperimentState.RUNNING, ExperimentState.PAUSED}, ExperimentState.CANCELLED),
}


def change_state(store: Store, experiment_id: int, action: str, now: float) -> Experiment:
    """``pause``: no new jobs; running jobs go on, and their results count, until they end.
    ``resume``: hand out jobs again. ``cancel``: queued and paused trials are cancelled now,
    running ones get ``stop`` at their next report or heartbeat (each of those reads the
    experiment's state; their rows are not written here, so a cancel never waits on a report
    that holds them). Repeating an action that already took effect is a no-op."""
    ctx = Context.load(store, experiment_id, lock=True)
    allowed, target = _MOVES[action]
    state = ctx.experiment.state
    if state is target:
        return ctx.experiment
    if state not in allowed:
        raise InvalidTransition(f"cannot {action} experiment {experiment_id}: it is {state}")
    store.set_experiment_state(experiment_id, target, now)
    if target is ExperimentState.CANCELLED:
        ctx = Context.load(store, experiment_id, lock=False)
        reason = Reason("cancelled", note="the experiment was cancelled")
        for trial in store.unfinished_trials(experiment_id):
            if trial.state is not TrialState.RUNNING:
                job = store.active_job_of_trial(trial.id)
                close_trial(store, ctx, trial, job, TrialState.CANCELLED, reason, now)
    return store.get_experiment(experiment_id)


def stop_trial(store: Store, trial_id: int, now: float) -> Trial:
    """Stop one trial by hand. A running trial gets ``stop`` at its next report or heartbeat;
    a paused or queued one stops now. It is ranked worst at the rung it worked toward."""
    trial = store.get_trial(trial_id)
    ctx = Context.load(store, trial.experiment_id, lock=True)
    trial = store.get_trial(trial_id)
    if trial.state.is_finished():
        raise InvalidTransition(
            f"trial {trial.experiment_id}/{trial.number} is already {trial.state}"
        )
    if trial.state is TrialState.RUNNING:
        return store.update_trial(trial.id, now, stop_requested=True)
    job = store.active_job_of_trial(trial.id)
    reason = Reason("manual_stop", rung=ctx.target_rung(trial, job), note="stopped by hand")
    return close_trial(store, ctx, trial, job, TrialState.STOPPED, reason, now)
