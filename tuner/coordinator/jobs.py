"""What a worker sends besides reports while it holds a lease (heartbeats, completion,
failure, release), and the reaper that ends the leases nobody renews.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuner.coordinator.lease import (
    CONTINUE,
    job_for,
    require_live_lease,
    settled_decision,
    snapshot_for,
    stop_if_asked,
)
from tuner.coordinator.outcomes import (
    Context,
    apply_rung_decision,
    close_trial,
    improved,
    record_result,
    requeue,
    retry_or_fail,
)
from tuner.domain import (
    Decision,
    DecisionKind,
    ExperimentState,
    Job,
    JobState,
    Reason,
    Report,
    Trial,
    TrialState,
)
from tuner.errors import ConflictError, DuplicateReport, LeaseExpired, OutOfRange
from tuner.protocol import (
    breaker_trips,
    lease_is_live,
    require_metric,
    same_value,
    supersedes,
)
from tuner.store import Store


def heartbeat(store: Store, job_id: int, lease_token: str, now: float) -> Decision:
    """Renew the lease; answer ``stop`` when the trial was stopped by hand or cancelled."""
    found = job_for(store, job_id, lease_token)
    job, trial = found.job, found.trial
    if job.state is not JobState.LEASED and trial.state.is_finished():
        return settled_decision(trial, job)
    require_live_lease(job, now)
    stopped = stop_if_asked(store, job, trial, found.experiment, now)
    if stopped is not None:
        return stopped
    until = found.experiment.config.lease_until(now)
    if store.renew_lease(job.id, job.token_hash or "", now, until) is None:
        raise LeaseExpired(f"the lease of job {job.id} has ended; stop training it")
    return CONTINUE


def complete(
    store: Store,
    job_id: int,
    lease_token: str,
    now: float,
    value: float | None = None,
    checkpoint: str | None = None,
    metrics: dict[str, Any] | None = None,
    metric: str | None = None,
) -> Decision:
    """The job trained to ``to_resource``: record the value at its rung and decide.

    ``value`` defaults to the report at ``to_resource``. The answer is ``pause`` (the trial
    waits at its rung for a promotion), ``complete`` (it reached ``max_resource``) or
    ``stop``. Repeating a completion returns the same answer. ``metric``, when given, must
    be the experiment's (:func:`tuner.protocol.require_metric`).
    """
    found = job_for(store, job_id, lease_token)  # with the report at to_resource
    config = found.experiment.config
    require_metric(config.metric, config.mode, metric, "completion")
    job, trial, stored = found.job, found.trial, found.report
    if job.state is JobState.DONE:
        return settled_decision(trial, job)
    require_live_lease(job, now)
    if stored is not None and supersedes(job, stored):  # a lost job's, not this retry's
        if value is not None:
            store.supersede_report(stored, job.id, now)
        stored = None
    if value is None:
        if stored is None:
            raise OutOfRange(f"complete needs a value, or a report at step {job.to_resource} first")
        value = stored.value
    elif stored is None:
        report = Report(trial.id, job.id, job.to_resource, value, metrics or {}, now)
        try:
            store.add_report(report)
        except ConflictError:  # stored meanwhile: by a copy of this completion, or a report
            return _completed_meanwhile(
                store, job_id, lease_token, now, lambda: complete(
                    store, job_id, lease_token, now, value, checkpoint, metrics
                ),
            )
    elif not same_value(stored.value, value):
        raise DuplicateReport(
            f"trial {trial.number} already reported {stored.value!r} at step {job.to_resource}; "
            f"complete with that value (or none) instead of {value!r}"
        )
    stopped = stop_if_asked(store, job, trial, found.experiment, now)
    if stopped is not None:
        return stopped
    ctx = Context.load(store, job.experiment_id, lock=True)
    trial = store.get_trial(trial.id)  # as it is under the lock
    if not store.end_job(job.id, JobState.DONE, now):
        return _completed_meanwhile(store, job_id, lease_token, now, None)
    entry = record_result(store, ctx, trial, job.rung, value, now)
    decision = ctx.scheduler.judge(snapshot_for(store, ctx), trial.bracket, job.rung, entry)
    changes: dict[str, Any] = {"last_value": value, "best_loss": improved(trial, entry.loss)}
    if checkpoint is not None:
        changes.update(checkpoint=checkpoint, checkpoint_step=job.to_resource)
    if decision.kind is DecisionKind.CONTINUE:  # stopping form: a rung below the top
        decision = Decision(DecisionKind.PAUSE, decision.reason)
    apply_rung_decision(
        store, ctx, trial, decision, job.rung, job.to_resource, now, job.to_resource, **changes
    )
    return decision


def _completed_meanwhile(
    store: Store,
    job_id: int,
    lease_token: str,
    now: float,
    again: Callable[[], Decision] | None,
) -> Decision:
    """Another transaction changed the job while this completion ran: read it again. A
    copy of this completion ended it (a resend after a lost answer): the answer that copy
    got. Still live (a report of the same step landed first): ``again``, the completion
    once more, now with that report stored. LeaseExpired if the job ended otherwise."""
    found = job_for(store, job_id, lease_token)  # read again: the change was committed
    if found.job.state is JobState.DONE:
        return settled_decision(found.trial, found.job)
    if again is not None and lease_is_live(found.job, now):
        return again()
    raise LeaseExpired(f"the lease of job {job_id} has ended; stop training it")


def fail(store: Store, job_id: int, lease_token: str, error: str, now: float) -> Trial:
    """The worker gave up on the job: retry it from the last checkpoint, or fail the trial."""
    job = job_for(store, job_id, lease_token).job
    if job.state is JobState.FAILED:
        return store.get_trial(job.trial_id)
    require_live_lease(job, now)
    ctx = Context.load(store, job.experiment_id, lock=True)
    if not store.end_job(job.id, JobState.FAILED, now):
        raise LeaseExpired(f"the lease of job {job.id} has ended")
    trial = store.get_trial(job.trial_id)
    reason = Reason("job_failed", bracket=trial.bracket, rung=job.rung, note=error_note(error))
    trial = retry_or_fail(store, ctx, trial, job, reason, now, lost=False)
    _pause_if_failing(store, ctx, error, now)
    return trial


#: How much of a failed job's error text its decision keeps.
ERROR_NOTE_CHARS = 1000


def error_note(error: str) -> str:
    """The error text a failure's decision keeps: all of it when short; else its first line
    (the agent's "the command exited with code 1") and its end, where a traceback names the
    exception."""
    text = error.strip()
    if len(text) <= ERROR_NOTE_CHARS:
        return text
    first = text.splitlines()[0][:200]
    tail = text[-(ERROR_NOTE_CHARS - len(first) - 5):]
    tail = tail.partition("\n")[2] or tail  # from a line's start
    return f"{first}\n...\n{tail}"


def _pause_if_failing(store: Store, ctx: Context, error: str, now: float) -> None:
    """The breaker (:func:`tuner.protocol.breaker_trips`): pause the experiment, saying why,
    when its jobs keep failing."""
    threshold = ctx.config.pause_after_failures
    if ctx.experiment.state is not ExperimentState.RUNNING or threshold == 0:
        return
    if not breaker_trips(store.recent_job_ends(ctx.experiment.id, threshold), threshold):
        return
    last = error.strip().splitlines()[-1][:300] if error.strip() else "no error text"
    store.set_experiment_state(
        ctx.experiment.id, ExperimentState.PAUSED, now,
        reason=f"paused by the service: the last {threshold} jobs failed and none succeeded "
        f"(last error: {last}); fix the training command, then resume",
    )


def release(store: Store, job_id: int, lease_token: str, now: float) -> Trial:
    """A worker shutting down hands its job back: it is queued again from the trial's last
    checkpoint without spending one of the trial's retries."""
    job = job_for(store, job_id, lease_token).job
    if job.state is JobState.RELEASED:
        return store.get_trial(job.trial_id)
    require_live_lease(job, now)
    ctx = Context.load(store, job.experiment_id, lock=True)
    if not store.end_job(job.id, JobState.RELEASED, now):
        raise LeaseExpired(f"the lease of job {job.id} has ended")
    trial = store.get_trial(job.trial_id)
    reason = Reason("released", bracket=trial.bracket, rung=job.rung, note="worker shut down")
    if ctx.experiment.state is ExperimentState.CANCELLED:
        return close_trial(store, ctx, trial, None, TrialState.CANCELLED, reason, now)
    return requeue(store, trial, job, reason, now, state=TrialState.PENDING, spend_retry=False)


def reap(store: Store, now: float, limit: int = 100) -> list[Job]:
    """Expire leases that were not renewed in time and re-queue their jobs.

    Safe with several replicas: each job is ended by a compare-and-set under its
    experiment's lock, so only one reaper acts on it.
    """
    reaped = []
    for job in store.expired_jobs(now, limit):
        ctx = Context.load(store, job.experiment_id, lock=True)
        if not store.expire_job(job.id, now):
            continue  # renewed or ended meanwhile
        trial = store.get_trial(job.trial_id)
        reason = Reason(
            "lease_expired",
            bracket=trial.bracket,
            rung=job.rung,
            note=f"worker {job.worker_id} stopped renewing its lease",
        )
        if ctx.experiment.state is ExperimentState.CANCELLED:
            close_trial(store, ctx, trial, None, TrialState.CANCELLED, reason, now)
        else:
            retry_or_fail(store, ctx, trial, job, reason, now, lost=True)
        reaped.append(job)
    return reaped
