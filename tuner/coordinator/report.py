"""What a worker sends while it holds a lease: reports, heartbeats, completion, failure.

A report, heartbeat or completion carries the job's lease token. A stale token (the lease
expired and the job went to another worker) is refused with :class:`LeaseExpired` and writes
nothing, so a zombie worker stops and the winner's data is never overwritten.

Each operation starts with one read of the job, its trial, its experiment and the report at
the step in question (:meth:`tuner.store.Store.load_job`); the experiment's lock is taken
only for rung writes and decisions, after everything that can be checked without it. A
report of a job the caller knows already (:class:`KnownJob`) skips the read: its writes
check the lease themselves, and the read comes only when they refuse.
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
    new_rung_result,
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
from tuner.schedulers.base import Snapshot
from tuner.store import JobContext, RungAhead, Store

CONTINUE = Decision(DecisionKind.CONTINUE, Reason("continue"))


def _job_for(store: Store, job_id: int, lease_token: str, step: int | None = None) -> JobContext:
    """The job (with its trial, experiment and report at ``step``) if the token holds it."""
    found = store.load_job(job_id, step=step)
    token_hash = found.job.token_hash
    if token_hash is None or token_hash != hash_token(lease_token):
        raise LeaseExpired(
            f"the lease token does not match job {job_id}: this worker does not hold it "
            "(its lease expired and the job went to another worker); stop training it"
        )
    return found


def _require_live_lease(job: Job, now: float) -> None:
    if job.state is not JobState.LEASED or (job.lease_expires_at or 0.0) < now:
        raise LeaseExpired(
            f"the lease of job {job.id} has ended ({job.state}); the trial goes to another "
            "worker: stop training it"
        )


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
    cancelled = experiment.state is ExperimentState.CANCELLED
    if not (trial.stop_requested or cancelled):
        return None
    ctx = Context.load(store, job.experiment_id, lock=True)
    trial = store.get_trial(trial.id)
    if cancelled:
        reason = Reason("cancelled", note="the experiment was cancelled")
        close_trial(store, ctx, trial, job, TrialState.CANCELLED, reason, now)
    else:
        reason = Reason("manual_stop", rung=ctx.target_rung(trial, job), note="stopped by hand")
        close_trial(store, ctx, trial, job, TrialState.STOPPED, reason, now)
    return Decision(DecisionKind.STOP, reason)


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
    stopping form, a report at or past a rung's resource is judged at each rung it passed,
    in order.

    ``known``: the job as the caller saw it before, with its experiment's rule. The report
    is then written first, with the experiment's lock, and the job is not read: the writes'
    own guards check the lease (:meth:`Store.record_step`), and what they refuse (a stale
    token, an ended lease, a step stored already) is answered by the path without it, in
    the same transaction (nothing was written).
    """
    if known is not None and known.job.id == job_id:
        decision = _report_known(store, known, lease_token, step, value, now, metrics, checkpoint)
        if decision is not None:
            return decision
    found = _job_for(store, job_id, lease_token, step)
    job, trial, existing = found.job, found.trial, found.report
    if existing is not None:
        if ValueKind.of(existing.value) is ValueKind.of(value) and (
            not math.isfinite(value) or existing.value == value
        ):
            return settled_decision(trial) if trial.state.is_finished() else CONTINUE
        raise DuplicateReport(
            f"trial {trial.number} already has value {existing.value!r} at step {step}; "
            f"refusing {value!r}"
        )
    _require_live_lease(job, now)
    if not job.from_resource < step <= job.to_resource:
        raise OutOfRange(
            f"step is {step}, but job {job.id} trains from {job.from_resource} to "
            f"{job.to_resource}: report steps {job.from_resource + 1}..{job.to_resource}"
        )
    changes = step_changes(value, step, checkpoint)
    ctx = Context.of(found.experiment)
    expires = now + ctx.config.lease_ttl_s
    # Whether the experiment's lock comes next (a judgement, a stop): the store may take it
    # with the writes. Only a hint: what follows decides from the trial as written.
    lock_next = (
        not math.isfinite(value)
        or trial.stop_requested
        or ctx.experiment.state is ExperimentState.CANCELLED
        or bool(_passed_rungs(ctx, trial, step))
    )
    try:
        recorded = store.record_step(
            Report(trial.id, job.id, step, value, metrics or {}, now),
            job.token_hash or "",
            now,
            expires,
            lock_experiment=lock_next,
            **changes,
        )
    except DuplicateReport:
        raise
    except ConflictError:  # the same report, sent twice at once: the first one won
        return report(store, job_id, lease_token, step, value, now, metrics, checkpoint)
    if recorded is None:
        raise LeaseExpired(f"the lease of job {job.id} has ended; stop training it")
    return _decide_recorded(store, ctx, job, recorded, step, value, now, locked=False)


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


def _report_known(
    store: Store,
    known: KnownJob,
    lease_token: str,
    step: int,
    value: float,
    now: float,
    metrics: dict[str, Any] | None,
    checkpoint: str | None,
) -> Decision | None:
    """:func:`report` without the job's read; None when the writes' guards refused it."""
    job = known.job
    if not job.from_resource < step <= job.to_resource:
        return None
    try:
        recorded = store.record_step(
            Report(job.trial_id, job.id, step, value, metrics or {}, now),
            hash_token(lease_token),
            now,
            now + known.ctx.config.lease_ttl_s,
            lock_experiment=True,
            rung_ahead=_rung_ahead(known, step, value, now),
            **step_changes(value, step, checkpoint),
        )
    except ConflictError:  # the step is stored already (DuplicateReport included)
        return None
    if recorded is None:  # the lease did not hold: nothing was written
        return None
    ctx = Context.load(store, job.experiment_id, lock=True)  # record_step locked and read it
    return _decide_recorded(store, ctx, job, recorded, step, value, now, locked=True)


def _rung_ahead(known: KnownJob, step: int, value: float, now: float) -> RungAhead | None:
    """The result that a report at ``step`` adds if it is judged at the rung of that step
    and no other (the stopping form's usual case: a trial reports each rung's step in
    turn), for the store to write ahead with the report (:meth:`Store.record_step`); None
    where no rung below the top is at ``step``, or the value is not finite (judged apart)."""
    ctx, job = known.ctx, known.job
    scheduler = ctx.scheduler
    if not scheduler.is_stopping or scheduler.rank_eta is None or not math.isfinite(value):
        return None
    bottom = scheduler.bracket_bottom(job.bracket)
    levels = scheduler.levels
    rung = next((k for k in range(bottom, len(levels) - 1) if levels[k] == step), None)
    if rung is None:
        return None
    result = new_rung_result(ctx, job.bracket, job.trial_number, job.trial_id, rung, value, now)
    return RungAhead(job.experiment_id, result, scheduler.rank_eta, bottom)


def _decide_recorded(
    store: Store,
    ctx: Context,
    job: Job,
    trial: Trial,
    step: int,
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
    if not math.isfinite(value):
        if not locked:
            ctx = Context.load(store, job.experiment_id, lock=True)
        rung = ctx.target_rung(trial, job)
        entry = record_result(store, ctx, trial, rung, value, now)
        decision = ctx.scheduler.judge(_snap(store, ctx), trial.bracket, rung, entry)
        not_trained = step - job.to_resource  # a refund
        store.end_job(job.id, JobState.DONE, now, add_resource_used=not_trained)
        apply_rung_decision(store, ctx, trial, decision, rung, step, now, step)
        return decision
    if not ctx.scheduler.is_stopping:
        return CONTINUE
    return _judge_passed_rungs(store, ctx, job, trial, step, value, now, locked=locked)


def _snap(store: Store, ctx: Context) -> Snapshot:
    """The snapshot a judgement reads (``n_active`` is counted only if the rule asks)."""
    return store.snapshot(ctx.experiment, can_start=True)


def _passed_rungs(ctx: Context, trial: Trial, step: int) -> list[int]:
    """Stopping form: the rungs below the top that ``step`` reached and ``trial`` has not
    been judged at yet."""
    if not ctx.scheduler.is_stopping:
        return []
    levels = ctx.scheduler.levels
    first = max(trial.rung + 1, ctx.scheduler.bracket_bottom(trial.bracket))
    return [k for k in range(first, len(levels) - 1) if levels[k] <= step]


def quiet_floor(ctx: Context, bracket: int, step: int) -> int:
    """The lowest ``trial.rung`` at which a report at ``step`` of a trial in ``bracket``
    reaches no rung it still has to be judged at: such a report, finite and with no stop
    asked, is stored and answered ``continue`` (the stopping form judges at every rung below
    the top that a report reaches; the promotion form at none: -1, true of every trial).

    The same rule as :func:`_passed_rungs`, as a bound that a store can test in SQL
    (:mod:`api.quiet_reports`)."""
    if not ctx.scheduler.is_stopping:
        return -1
    levels = ctx.scheduler.levels
    reached = [k for k in range(len(levels) - 1) if levels[k] <= step]
    if not reached or reached[-1] < ctx.scheduler.bracket_bottom(bracket):
        return -1
    return reached[-1]


def _judge_passed_rungs(
    store: Store,
    ctx: Context,
    job: Job,
    trial: Trial,
    step: int,
    value: float,
    now: float,
    *,
    locked: bool = False,
) -> Decision:
    """Stopping form: judge the trial at every rung below the top that ``step`` reached.

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
    (:func:`api.deps.is_transient`). A cancel writes no running trial's row, so it cannot.
    """
    passed = _passed_rungs(ctx, trial, step)
    if not passed:
        return CONTINUE
    if not locked:
        ctx = Context.load(store, job.experiment_id, lock=True)
    levels = ctx.scheduler.levels
    loss = to_loss(value, ctx.config.sign)
    decision = CONTINUE
    for k in passed:
        if k <= trial.rung:
            continue  # a concurrent retry judged it already
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
