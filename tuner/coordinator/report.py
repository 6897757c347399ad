"""What a worker sends while it holds a lease: reports, heartbeats, completion, failure.

A report, heartbeat or completion carries the job's lease token. A stale token (the lease
expired and the job went to another worker) is refused with :class:`LeaseExpired` and writes
nothing, so a zombie worker stops and the winner's data is never overwritten.

Each operation starts with one read of the job, its trial, its experiment and the report at
the step in question (:meth:`tuner.store.Store.load_job`); the experiment's lock is taken
only for rung writes and decisions, after everything that can be checked without it. A
report of a job the caller knows already (:class:`KnownJob`) skips the read: its writes
check the lease themselves, and the read comes only when they refuse. The rules themselves
(whose lease is live, what a report needs) live in :mod:`tuner.protocol`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tuner.coordinator.outcomes import (
    Context,
    apply_rung_decision,
    close_trial,
    hash_token,
    improved,
    record_result,
    requeue,
    retry_or_fail,
)
from tuner.domain import (
    Decision,
    DecisionKind,
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Reason,
    Report,
    Trial,
    TrialState,
    ValueKind,
    to_loss,
)
from tuner.errors import ConflictError, DuplicateReport, LeaseExpired, OutOfRange
from tuner.protocol import (
    ReportPlan,
    holds_token,
    lease_is_live,
    plan_report,
    stop_asked,
)
from tuner.schedulers.base import Snapshot
from tuner.store import JobContext, StepBounds, Store

CONTINUE = Decision(DecisionKind.CONTINUE, Reason("continue"))


def _job_for(store: Store, job_id: int, lease_token: str, step: int | None = None) -> JobContext:
    """The job (with its trial, experiment and report at ``step``) if the token holds it."""
    found = store.load_job(job_id, step=step)
    if not holds_token(found.job, hash_token(lease_token)):
        raise LeaseExpired(
            f"the lease token does not match job {job_id}: this worker does not hold it "
            "(its lease expired and the job went to another worker); stop training it"
        )
    return found


def _require_live_lease(job: Job, now: float) -> None:
    if not lease_is_live(job, now):
        raise LeaseExpired(
            f"the lease of job {job.id} has ended ({job.state}); the trial goes to another "
            "worker: stop training it"
        )


def held_job(store: Store, job_id: int, lease_token: str) -> Job:
    """The job, if ``lease_token`` is its lease token (LeaseExpired if not), whether its
    lease is still live or not (a worker's last output of a job that a stop ended)."""
    return _job_for(store, job_id, lease_token).job


def settled_decision(trial: Trial) -> Decision:
    """The answer for a repeated call once the trial moved on."""
    if trial.state in (TrialState.STOPPED, TrialState.FAILED, TrialState.CANCELLED):
        return Decision(DecisionKind.STOP, Reason("already_stopped", note=str(trial.state)))
    if trial.state is TrialState.COMPLETED:
        return Decision(DecisionKind.COMPLETE, Reason("max_resource"))
    if trial.state is TrialState.PAUSED:
        return Decision(DecisionKind.PAUSE, Reason("await_promotion", rung=trial.rung))
    return CONTINUE


def _stop_if_asked(
    store: Store, job: Job, trial: Trial, experiment: Experiment, now: float
) -> Decision | None:
    """Cancel and stop-by-hand take effect at the next report or heartbeat."""
    if not stop_asked(trial, experiment):
        return None
    ctx = Context.load(store, job.experiment_id, lock=True)
    trial = store.get_trial(trial.id)
    if experiment.state is ExperimentState.CANCELLED:
        reason = Reason("cancelled", note="the experiment was cancelled")
        close_trial(store, ctx, trial, job, TrialState.CANCELLED, reason, now)
    else:
        reason = Reason("manual_stop", rung=ctx.target_rung(trial, job), note="stopped by hand")
        close_trial(store, ctx, trial, job, TrialState.STOPPED, reason, now)
    return Decision(DecisionKind.STOP, reason)


#: How often a report reads its job again after its writes were refused by a change that
#: another transaction made meanwhile (the same step stored at once, the lease ended).
_REREADS = 3


def report(
    store: Store,
    job_id: int,
    lease_token: str,
    step: int,
    value: float,
    now: float,
    metrics: dict[str, Any] | None = None,
    checkpoint: str | None = None,
    *,
    known: KnownJob | None = None,
) -> Decision:
    """Store the value at ``step`` once and answer ``continue`` or ``stop``.

    The same value again for a stored step is answered as before (idempotent); another value
    is a :class:`DuplicateReport`. A step outside ``(from_resource, to_resource]`` is
    :class:`OutOfRange`. A non-finite value stops the trial (ranked worst at its rung). In the
    stopping form, a report at or past a rung's resource is judged at each rung it reached,
    in order (:func:`tuner.protocol.plan_report` says which).

    ``known``: the job as the caller saw it before, with its experiment's rule. The report
    is then written first, with the experiment's lock, and the job is not read: the writes'
    bounds check the lease and the step's novelty (:meth:`Store.record_step`), and what they
    refuse (a stale token, an ended lease, a step stored already) is answered by the path
    that reads the job, in the same transaction (nothing was written).
    """
    token_hash = hash_token(lease_token)
    if known is not None and known.job.id == job_id:
        decision = _report_known(store, known, token_hash, step, value, now, metrics, checkpoint)
        if decision is not None:
            return decision
    for _ in range(_REREADS):
        found = _job_for(store, job_id, lease_token, step)
        job, trial, existing = found.job, found.trial, found.report
        if existing is not None:
            return _repeat(trial, existing, step, value)
        _require_live_lease(job, now)
        ctx = Context.of(found.experiment)
        plan = plan_report(ctx.scheduler, job, step, value)
        if not plan.in_range:
            raise OutOfRange(
                f"step is {step}, but job {job.id} trains from {job.from_resource} to "
                f"{job.to_resource}: report steps {job.from_resource + 1}..{job.to_resource}"
            )
        # Whether the experiment's lock comes next (a judgement, a stop): the store may take
        # it with the writes. Only a hint: what follows decides from the trial as written.
        lock_next = (
            not plan.finite
            or stop_asked(trial, ctx.experiment)
            or bool(plan.rungs_to_judge(trial.rung))
        )
        try:
            recorded = store.record_step(
                Report(trial.id, job.id, step, value, metrics or {}, now),
                StepBounds(token_hash, now),
                now + ctx.config.lease_ttl_s,
                lock_experiment=lock_next,
                **step_changes(value, step, checkpoint),
            )
        except ConflictError:  # the same step, stored at once by another call
            continue
        if recorded is None:  # the lease ended or the step was stored meanwhile
            continue
        return _decide_recorded(store, ctx, job, plan, recorded, value, now, locked=False)
    raise ConflictError(
        f"job {job_id} changed while its report at step {step} was written; send it again"
    )


def _repeat(trial: Trial, existing: Report, step: int, value: float) -> Decision:
    """The answer to a report of a step the trial has stored already."""
    if ValueKind.of(existing.value) is ValueKind.of(value) and (
        not math.isfinite(value) or existing.value == value
    ):
        return settled_decision(trial) if trial.state.is_finished() else CONTINUE
    raise DuplicateReport(
        f"trial {trial.number} already has value {existing.value!r} at step {step}; "
        f"refusing {value!r}"
    )


def step_changes(value: float, step: int, checkpoint: str | None) -> dict[str, Any]:
    """The trial's columns that a report at ``step`` sets."""
    changes: dict[str, Any] = {"last_value": value}
    if checkpoint is not None:
        changes.update(checkpoint=checkpoint, checkpoint_step=step)
    return changes


@dataclass(frozen=True, slots=True)
class KnownJob:
    """A leased job and its experiment's rule, as a caller read them before: of ``job``
    only what never changes once it is leased is used (its experiment, trial, bracket and
    range), of ``ctx`` the document and the scheduler."""

    job: Job
    ctx: Context

    def plan(self, step: int, value: float) -> ReportPlan:
        """The plan of a report of this job (:func:`tuner.protocol.plan_report`)."""
        return plan_report(self.ctx.scheduler, self.job, step, value)


def _report_known(
    store: Store,
    known: KnownJob,
    token_hash: str,
    step: int,
    value: float,
    now: float,
    metrics: dict[str, Any] | None,
    checkpoint: str | None,
) -> Decision | None:
    """:func:`report` without the job's read; None when the writes' bounds refused it."""
    job = known.job
    plan = known.plan(step, value)
    if not plan.in_range:
        return None
    try:
        recorded = store.record_step(
            Report(job.trial_id, job.id, step, value, metrics or {}, now),
            StepBounds(token_hash, now),
            now + known.ctx.config.lease_ttl_s,
            lock_experiment=True,
            **step_changes(value, step, checkpoint),
        )
    except ConflictError:  # the step was stored at once by another call
        return None
    if recorded is None:  # a bound did not hold: nothing was written
        return None
    ctx = Context.load(store, job.experiment_id, lock=True)  # record_step locked and read it
    return _decide_recorded(store, ctx, job, plan, recorded, value, now, locked=True)


def _decide_recorded(
    store: Store,
    ctx: Context,
    job: Job,
    plan: ReportPlan,
    trial: Trial,
    value: float,
    now: float,
    *,
    locked: bool,
) -> Decision:
    """After a report's writes: a stop asked for, a non-finite value, or the judgements of
    the stopping form. ``locked``: ``ctx`` was read under the experiment's lock."""
    stopped = _stop_if_asked(store, job, trial, ctx.experiment, now)
    if stopped is not None:
        return stopped
    step = plan.step
    if not plan.finite:
        if not locked:
            ctx = Context.load(store, job.experiment_id, lock=True)
        rung = ctx.target_rung(trial, job)
        entry = record_result(store, ctx, trial, rung, value, now)
        decision = ctx.scheduler.judge(_snap(store, ctx), trial.bracket, rung, entry)
        not_trained = step - job.to_resource  # a refund
        store.end_job(job.id, JobState.DONE, now, add_resource_used=not_trained)
        apply_rung_decision(store, ctx, trial, decision, rung, step, now, step)
        return decision
    rungs = plan.rungs_to_judge(trial.rung)
    if not rungs:
        return CONTINUE
    return _judge_at(store, ctx, job, trial, rungs, step, value, now, locked=locked)


def _snap(store: Store, ctx: Context) -> Snapshot:
    """The snapshot a judgement reads (``n_active`` is counted only if the rule asks)."""
    return store.snapshot(ctx.experiment, can_start=True)


def _judge_at(
    store: Store,
    ctx: Context,
    job: Job,
    trial: Trial,
    rungs: range,
    step: int,
    value: float,
    now: float,
    *,
    locked: bool,
) -> Decision:
    """Stopping form: judge the trial at ``rungs``, in order, until one stops it.

    Rung writes are serialised by the experiment's lock, taken here, with or after the
    report's own writes (on PostgreSQL, :meth:`Store.record_step` takes it in the same
    statement when asked, and the ``Context.load`` below costs no round trip): those writes
    hold ``trial``'s row until the transaction ends, so ``trial`` (as the writes returned
    it) is still the trial under the lock and is not read again. Not taking the lock before
    the writes keeps a round trip out of it (every other claim and judgement of the
    experiment waits for it). The price is a second lock order: a transaction that takes the
    experiment's lock first and then writes this very trial or job (a hand stop of this
    trial, the reaper at this lease's last instant) can deadlock with it; PostgreSQL then
    aborts one of the two after ``deadlock_timeout`` (1 s) and the service runs it again
    (:func:`api.writer.is_transient`). A cancel writes no running trial's row, so it cannot.
    """
    if not locked:
        ctx = Context.load(store, job.experiment_id, lock=True)
    levels = ctx.scheduler.levels
    loss = to_loss(value, ctx.config.sign)
    decision = CONTINUE
    for k in rungs:
        entry = record_result(store, ctx, trial, k, value, now)
        decision = ctx.scheduler.judge(_snap(store, ctx), trial.bracket, k, entry)
        trial = apply_rung_decision(
            store,
            ctx,
            trial,
            decision,
            k,
            levels[k],
            now,
            step,
            job=job,  # a stop ends it, refunding the steps not trained
            refund=step - job.to_resource,
            best_loss=improved(trial, loss),
        )
        if decision.kind is DecisionKind.STOP:
            break
    return decision


def heartbeat(store: Store, job_id: int, lease_token: str, now: float) -> Decision:
    """Renew the lease; answer ``stop`` when the trial was stopped by hand or cancelled."""
    found = _job_for(store, job_id, lease_token)
    job, trial = found.job, found.trial
    if job.state is not JobState.LEASED and trial.state.is_finished():
        return settled_decision(trial)
    _require_live_lease(job, now)
    stopped = _stop_if_asked(store, job, trial, found.experiment, now)
    if stopped is not None:
        return stopped
    ttl = found.experiment.config.lease_ttl_s
    if store.renew_lease(job.id, job.token_hash or "", now, now + ttl) is None:
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
) -> Decision:
    """The job trained to ``to_resource``: record the value at its rung and decide.

    ``value`` defaults to the report at ``to_resource``. The answer is ``pause`` (the trial
    waits at its rung for a promotion), ``complete`` (it reached ``max_resource``) or
    ``stop``. Repeating a completion returns the same answer.
    """
    found = _job_for(store, job_id, lease_token)  # with the report at to_resource
    job, trial, stored = found.job, found.trial, found.report
    if job.state is JobState.DONE:
        return settled_decision(trial)
    _require_live_lease(job, now)
    if value is None:
        if stored is None:
            raise OutOfRange(f"complete needs a value, or a report at step {job.to_resource} first")
        value = stored.value
    elif stored is None:
        store.add_report(Report(trial.id, job.id, job.to_resource, value, metrics or {}, now))
    elif ValueKind.of(stored.value) is not ValueKind.of(value) or (
        math.isfinite(value) and stored.value != value
    ):
        raise DuplicateReport(
            f"trial {trial.number} already reported {stored.value!r} at step {job.to_resource}; "
            f"complete with that value (or none) instead of {value!r}"
        )
    stopped = _stop_if_asked(store, job, trial, found.experiment, now)
    if stopped is not None:
        return stopped
    ctx = Context.load(store, job.experiment_id, lock=True)
    trial = store.get_trial(trial.id)  # as it is under the lock
    if not store.end_job(job.id, JobState.DONE, now):
        raise LeaseExpired(f"the lease of job {job.id} has ended; stop training it")
    entry = record_result(store, ctx, trial, job.rung, value, now)
    decision = ctx.scheduler.judge(_snap(store, ctx), trial.bracket, job.rung, entry)
    changes: dict[str, Any] = {"last_value": value, "best_loss": improved(trial, entry.loss)}
    if checkpoint is not None:
        changes.update(checkpoint=checkpoint, checkpoint_step=job.to_resource)
    if decision.kind is DecisionKind.CONTINUE:  # stopping form: a rung below the top
        decision = Decision(DecisionKind.PAUSE, decision.reason)
    apply_rung_decision(
        store, ctx, trial, decision, job.rung, job.to_resource, now, job.to_resource, **changes
    )
    return decision


def fail(store: Store, job_id: int, lease_token: str, error: str, now: float) -> Trial:
    """The worker gave up on the job: retry it from the last checkpoint, or fail the trial."""
    job = _job_for(store, job_id, lease_token).job
    if job.state is JobState.FAILED:
        return store.get_trial(job.trial_id)
    _require_live_lease(job, now)
    ctx = Context.load(store, job.experiment_id, lock=True)
    if not store.end_job(job.id, JobState.FAILED, now):
        raise LeaseExpired(f"the lease of job {job.id} has ended")
    trial = store.get_trial(job.trial_id)
    reason = Reason("job_failed", bracket=trial.bracket, rung=job.rung, note=error[:500])
    return retry_or_fail(store, ctx, trial, job, reason, now, lost=False)


def release(store: Store, job_id: int, lease_token: str, now: float) -> Trial:
    """A worker shutting down hands its job back: it is queued again from the trial's last
    checkpoint without spending one of the trial's retries."""
    job = _job_for(store, job_id, lease_token).job
    if job.state is JobState.RELEASED:
        return store.get_trial(job.trial_id)
    _require_live_lease(job, now)
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
