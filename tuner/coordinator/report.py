"""Reports: a worker's value at a step of the job it holds, stored once and answered
``continue`` or ``stop``.

The report plan (:func:`tuner.protocol.plan_report`) says what a report needs: a plain
write, a judgement at the rungs its step reached (the stopping form), or a stop (a
non-finite value). The report starts with one read of the job, its trial, its experiment
and the report at the step (:meth:`tuner.store.Store.load_job`); the experiment's lock is
taken only for rung writes and decisions, after everything that can be checked without it.
A report of a job the caller knows already (:class:`KnownJob`) skips the read: its writes
check their bounds themselves, and the read comes only when they refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.coordinator.lease import (
    CONTINUE,
    ended_lease,
    job_for,
    require_live_lease,
    settled_decision,
    snapshot_for,
    stop_if_asked,
)
from tuner.coordinator.outcomes import (
    Context,
    apply_rung_decision,
    improved,
    record_result,
)
from tuner.domain import Decision, DecisionKind, Job, JobState, Report, Trial, to_loss
from tuner.errors import ConflictError, DuplicateReport, OutOfRange
from tuner.protocol import (
    ReportPlan,
    answers_repeat,
    hash_token,
    lease_is_live,
    plan_report,
    require_metric,
    same_value,
    stop_asked,
    supersedes,
)
from tuner.store import Judging, StepBounds, Store

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
    metric: str | None = None,
) -> Decision:
    """Store the value at ``step`` once and answer ``continue`` or ``stop``.

    The same value again for a stored step is answered as before (idempotent) while the
    lease is live or after the decision that ended the job; another value is a
    :class:`DuplicateReport`. A step that an earlier job of the trial reported (this job is
    a retry from an earlier checkpoint) is stored again: the old report is kept as
    superseded history (:func:`tuner.protocol.supersedes`). A step outside
    ``(from_resource, to_resource]`` is
    :class:`OutOfRange`. A non-finite value stops the trial (ranked worst at its rung). In the
    stopping form, a report at or past a rung's resource is judged at each rung it reached,
    in order (:func:`tuner.protocol.plan_report` says which).

    ``known``: the job as the caller saw it before, with its experiment's rule. The report
    is then written first, with the experiment's lock, and the job is not read: the writes'
    bounds check the lease and the step's novelty (:meth:`Store.record_step`), and what they
    refuse (a stale token, an ended lease, a step stored already) is answered by the path
    that reads the job, in the same transaction (a refusal writes nothing; a step stored at
    once by another call may have renewed the lease). After three such refusals in a row
    the report answers ConflictError: the client sends it again.

    ``metric``: the metric the value is, when the worker names it; another than the
    experiment's is :class:`MetricMismatch` (:func:`tuner.protocol.require_metric`),
    before anything is written.
    """
    token_hash = hash_token(lease_token)
    if known is not None and known.job.id == job_id:
        known.require_metric(metric)
        decision = _report_known(store, known, token_hash, step, value, now, metrics, checkpoint)
        if decision is not None:
            return decision
    for _ in range(_REREADS):
        found = job_for(store, job_id, lease_token, step)
        config = found.experiment.config
        require_metric(config.metric, config.mode, metric)
        job, trial, existing = found.job, found.trial, found.report
        if existing is not None and not supersedes(job, existing):
            return _repeat(job, trial, existing, step, value, now)
        require_live_lease(job, now)
        ctx = Context.of(found.experiment)
        plan = plan_report(ctx.scheduler, job, step, value)
        if not plan.in_range:
            raise OutOfRange(
                f"step is {step}, but job {job.id} trains from {job.from_resource} to "
                f"{job.to_resource}: report steps {job.from_resource + 1}..{job.to_resource}"
            )
        # Whether the experiment's lock comes next (a judgement, a stop): the store may take
        # it with the writes. Only a hint: what follows decides from the trial as written.
        if existing is not None:  # a retry trained the step again: the history keeps both
            store.supersede_report(existing, job.id, now)
        lock_next = (
            not plan.finite
            or stop_asked(trial, ctx.experiment)
            or bool(plan.rungs_to_judge(trial.rung))
        )
        try:
            recorded = store.record_step(
                Report(trial.id, job.id, step, value, metrics or {}, now),
                StepBounds(token_hash, now),
                ctx.config.lease_until(now),
                judging=_judging(
                    ctx, job, plan.rungs_to_judge(trial.rung)[:1], value, ctx.experiment.n_trials
                ) if lock_next else None,
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


def _repeat(
    job: Job, trial: Trial, existing: Report, step: int, value: float, now: float
) -> Decision:
    """The answer to a report of a step that ``job`` (or, for a stale token, a later job of
    the trial) stored already."""
    if not answers_repeat(job, now):
        raise ended_lease(job)
    if same_value(existing.value, value):
        if lease_is_live(job, now) and not trial.state.is_finished():
            return CONTINUE
        return settled_decision(trial, job)
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
    n_trials: int = 0  # the experiment's trials when the caller saw the job

    def plan(self, step: int, value: float) -> ReportPlan:
        """The plan of a report of this job (:func:`tuner.protocol.plan_report`)."""
        return plan_report(self.ctx.scheduler, self.job, step, value)

    def require_metric(self, metric: str | None) -> None:
        """A report naming ``metric`` is of this job's experiment's metric
        (:func:`tuner.protocol.require_metric`)."""
        require_metric(self.ctx.config.metric, self.ctx.config.mode, metric)


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
            known.ctx.config.lease_until(now),
            # A trial that reports each step is judged at the last rung its step reached.
            judging=_judging(known.ctx, job, plan.reached[-1:], value, known.n_trials),
            **step_changes(value, step, checkpoint),
        )
    except ConflictError:  # the step was stored at once by another call
        return None
    if recorded is None:  # a bound did not hold: nothing was written
        return None
    ctx = Context.load(store, job.experiment_id, lock=True)  # record_step locked and read it
    return _decide_recorded(store, ctx, job, plan, recorded, value, now, locked=True)


def _judging(ctx: Context, job: Job, first: range, value: float, n_trials: int) -> Judging:
    """The hint that a judgement of ``job``'s trial follows the writes, first at the rung in
    ``first`` (if any), where the stopping test asks how many results are better, up to its
    limit for a rung of ``n_trials`` (the experiment's trials as the caller saw them: a
    rung holds at most one result per trial, so that count is enough unless trials started
    since)."""
    return Judging(
        job.experiment_id,
        job.bracket,
        first[0] if first else None,
        to_loss(value, ctx.config.sign),
        ctx.scheduler.rank_limit(n_trials) or 0,
    )


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
    stopped = stop_if_asked(store, job, trial, ctx.experiment, now)
    if stopped is not None:
        return stopped
    step = plan.step
    if not plan.finite:
        if not locked:
            ctx = Context.load(store, job.experiment_id, lock=True)
        rung = ctx.target_rung(trial, job)
        entry = record_result(store, ctx, trial, rung, value, now)
        decision = ctx.scheduler.judge(snapshot_for(store, ctx), trial.bracket, rung, entry)
        not_trained = step - job.to_resource  # a refund
        store.end_job(job.id, JobState.DONE, now, add_resource_used=not_trained)
        apply_rung_decision(store, ctx, trial, decision, rung, step, now, step)
        return decision
    rungs = plan.rungs_to_judge(trial.rung)
    if not rungs:
        return CONTINUE
    return _judge_at(store, ctx, job, trial, rungs, step, value, now, locked=locked)


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
        decision = ctx.scheduler.judge(snapshot_for(store, ctx), trial.bracket, k, entry)
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
