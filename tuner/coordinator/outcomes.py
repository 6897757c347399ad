"""How a trial's job ends: recorded at its rung, paused, completed, stopped, retried or failed.

Shared by claims, reports, the reaper and the experiment actions, so that every path that
ends a job writes the same facts.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from tuner.config import ExperimentConfig, build_scheduler
from tuner.domain import (
    Decision,
    DecisionKind,
    DecisionRecord,
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Reason,
    RungEntry,
    RungResult,
    Trial,
    TrialState,
    to_loss,
)
from tuner.errors import ConflictError
from tuner.schedulers.base import Scheduler
from tuner.store import RungStop, Store


@dataclass(frozen=True)
class Context:
    """An experiment with its document and rule, loaded once per operation."""

    experiment: Experiment
    config: ExperimentConfig
    scheduler: Scheduler

    @classmethod
    def load(cls, store: Store, experiment_id: int, *, lock: bool) -> Context:
        return cls.of(store.get_experiment(experiment_id, lock=lock))

    @classmethod
    def of(cls, experiment: Experiment) -> Context:
        """The context of an experiment already read (no lock is taken here)."""
        config: ExperimentConfig = experiment.config
        return cls(experiment, config, build_scheduler(config))

    def target_rung(self, trial: Trial, job: Job | None) -> int:
        """The rung a trial is working toward: where a failure or a stop is recorded."""
        bottom = self.scheduler.bracket_bottom(trial.bracket)
        rung = max(trial.rung + 1, bottom)
        return min(rung, job.rung) if job is not None else rung


def record(
    store: Store,
    trial: Trial,
    kind: DecisionKind,
    reason: Reason | dict[str, Any],
    now: float,
    step: int | None = None,
) -> None:
    as_dict = reason.as_dict() if isinstance(reason, Reason) else reason
    store.add_decision(DecisionRecord(trial.id, kind, as_dict, step, now))


def new_rung_result(
    ctx: Context,
    bracket: int,
    trial_number: int,
    trial_id: int,
    rung: int,
    value: float,
    now: float,
    *,
    closed: bool = False,
) -> RungResult:
    """The result of a trial's ``value`` at ``rung`` (its loss by the document's goal)."""
    return RungResult(
        bracket=bracket,
        rung=rung,
        trial_number=trial_number,
        trial_id=trial_id,
        loss=to_loss(value, ctx.config.sign),
        value=value,
        promoted=False,
        closed=closed,
        created_at=now,
        resource=ctx.scheduler.levels[rung],
    )


def record_result(
    store: Store,
    ctx: Context,
    trial: Trial,
    rung: int,
    value: float,
    now: float,
    *,
    closed: bool = False,
) -> RungEntry:
    """Put the trial's value at ``rung`` into the rung (once; a second time is a no-op)."""
    result = new_rung_result(
        ctx, trial.bracket, trial.number, trial.id, rung, value, now, closed=closed
    )
    # Recorded already (a repeated call): the first result stands. A store's ConflictError
    # leaves the transaction usable.
    with contextlib.suppress(ConflictError):
        store.add_rung_result(ctx.experiment.id, result)
    return RungEntry(result.loss, trial.number)


def improved(trial: Trial, loss: float) -> float | None:
    if not math.isfinite(loss):
        return trial.best_loss
    return loss if trial.best_loss is None else min(trial.best_loss, loss)


def close_trial(
    store: Store,
    ctx: Context,
    trial: Trial,
    job: Job | None,
    state: TrialState,
    reason: Reason,
    now: float,
) -> Trial:
    """End a trial by hand, by cancellation or for good after failures.

    Its value at the rung it worked toward is recorded as worst (closed, never promotable),
    so a synchronous rung that waits for it still fills up; a trial paused at a rung is
    closed there.
    """
    if job is not None:
        store.end_job(
            job.id, JobState.CANCELLED if state is TrialState.CANCELLED else JobState.DONE, now
        )
    if trial.state is TrialState.PAUSED:
        store.close_rung_result(ctx.experiment.id, trial.bracket, trial.rung, trial.number)
    elif state is not TrialState.CANCELLED:
        rung = ctx.target_rung(trial, job)
        if rung < len(ctx.scheduler.levels):
            record_result(store, ctx, trial, rung, math.inf, now, closed=True)
    kind = DecisionKind.STOP
    record(store, trial, kind, reason, now)
    return store.update_trial(trial.id, now, state=state, ended_at=now, stop_requested=False)


def requeue(
    store: Store,
    trial: Trial,
    job: Job,
    reason: Reason,
    now: float,
    *,
    state: TrialState,
    spend_retry: bool,
) -> Trial:
    """Queue the job again, resuming from the trial's newest checkpoint (a checkpoint
    reported during the lost job beats the one the job started from)."""
    start, checkpoint = job.from_resource, job.checkpoint
    if trial.checkpoint is not None and trial.checkpoint_step > start:
        start, checkpoint = trial.checkpoint_step, trial.checkpoint
    retries = trial.retries + int(spend_retry)
    trial = store.update_trial(trial.id, now, state=state, retries=retries)
    attempt = job.attempt + int(spend_retry)
    store.create_job(trial, job.rung, start, job.to_resource, checkpoint, attempt, now)
    record(store, trial, DecisionKind.CONTINUE, reason, now)
    return trial


def retry_or_fail(
    store: Store,
    ctx: Context,
    trial: Trial,
    job: Job,
    reason: Reason,
    now: float,
    *,
    lost: bool,
) -> Trial:
    """After a lost lease or a failure: queue the job again from the last checkpoint, or,
    with ``max_retries`` spent, fail the trial (recorded as worst at its rung)."""
    if ctx.experiment.state is ExperimentState.CANCELLED:
        cancelled = Reason("cancelled", note="the experiment was cancelled")
        return close_trial(store, ctx, trial, None, TrialState.CANCELLED, cancelled, now)
    if trial.retries < ctx.config.max_retries:
        state = TrialState.LOST if lost else TrialState.PENDING
        return requeue(store, trial, job, reason, now, state=state, spend_retry=True)
    failed = Reason(
        reason.rule,
        bracket=trial.bracket,
        rung=ctx.target_rung(trial, job),
        note=f"{reason.note}; no retries left ({ctx.config.max_retries})",
    )
    return close_trial(store, ctx, trial, None, TrialState.FAILED, failed, now)


def apply_rung_decision(
    store: Store,
    ctx: Context,
    trial: Trial,
    decision: Decision,
    rung: int,
    resource: int,
    now: float,
    step: int | None = None,
    *,
    job: Job | None = None,
    refund: int = 0,
    **changes: Any,
) -> Trial:
    """Write what the scheduler decided about a trial that reached ``rung``, in one write: a
    stop also closes the trial's result there and ends ``job`` (if given), refunding
    ``refund`` (<= 0) units."""
    as_dict = decision.reason.as_dict()
    logged = DecisionRecord(trial.id, decision.kind, as_dict, step, now)
    stop = None
    match decision.kind:
        case DecisionKind.PAUSE:
            changes.update(state=TrialState.PAUSED, resource=resource)
        case DecisionKind.COMPLETE:
            changes.update(state=TrialState.COMPLETED, resource=resource, ended_at=now)
        case DecisionKind.STOP:
            changes.update(state=TrialState.STOPPED, resource=resource, ended_at=now)
            job_id = job.id if job is not None else None
            stop = RungStop(ctx.experiment.id, job_id, refund, trial.bracket, rung, trial.number)
    return store.settle_trial(logged, now, stop=stop, rung=rung, **changes)


def finish_experiment(store: Store, ctx: Context, now: float, reason: Reason) -> None:
    """The experiment is over: trials still paused at a rung were not promoted."""
    for trial in store.unfinished_trials(ctx.experiment.id):
        note = Reason(reason.rule, rung=trial.rung, note="experiment ended before a promotion")
        if trial.state is TrialState.PAUSED:
            store.close_rung_result(ctx.experiment.id, trial.bracket, trial.rung, trial.number)
            record(store, trial, DecisionKind.STOP, note, now)
            store.update_trial(trial.id, now, state=TrialState.STOPPED, ended_at=now)
    store.set_experiment_state(ctx.experiment.id, ExperimentState.COMPLETED, now)
