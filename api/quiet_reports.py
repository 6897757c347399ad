"""Quiet reports: a report that needs no judgement, in one statement (PostgreSQL).

Most reports of a training run fall between rungs: the stopping form judges a trial only at
the steps where rungs are, the promotion form at none. Such a report, when it is new, finite,
in the job's range, under a live lease and with no stop asked, is stored and answered
``continue``, and that is all the coordinator does with it. Through the full path
(:func:`tuner.coordinator.report`) it costs four round trips (BEGIN, the job's read, the
writes, COMMIT); here it is one statement in autocommit, whose guards are those conditions
(``tuner.storage.compound.quiet_step``): the lease's compare-and-set, the step's range and
novelty, ``trial.rung >= quiet_floor(...)`` (the trial was judged at every rung the step
reaches), no stop asked of the trial or the experiment. When a guard fails, the statement
writes nothing and the caller takes the full path, which answers as always: an error, an
idempotent repeat, a judgement, a stop.

The statement runs on a psycopg connection of the process's own small pool
(``Runtime.quiet_pool``, autocommit): plain async code, no SQLAlchemy connection nor
greenlet, and never in the queue of the transactions that wait for an experiment's lock.

What the guards need from outside the statement never changes once a job is leased (its
experiment, trial, bracket and range) or once an experiment is made (its document), so
each process keeps it for the jobs it has handed out or served (:class:`KnownJobs`). A job
this process has not seen (another replica handed it out, or it was restarted) takes the
full path once, which makes it known.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import psycopg

from tuner.coordinator.outcomes import Context, hash_token
from tuner.coordinator.report import KnownJob, quiet_floor, step_changes
from tuner.domain import Experiment, Job, Report
from tuner.storage import direct
from tuner.storage.compound import quiet_step
from tuner.wire import ReportIn

if TYPE_CHECKING:
    from api.deps import Runtime


class KnownJobs:
    """The live jobs this process handed out or served, bounded: past ``limit`` it starts
    over (a forgotten job takes the full path once)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._jobs: dict[int, KnownJob] = {}
        self._contexts: dict[int, Context] = {}
        self._limit = limit

    def remember(self, job: Job, experiment: Experiment) -> None:
        if len(self._jobs) >= self._limit:
            self._jobs.clear()
            self._contexts.clear()
        ctx = self._contexts.get(experiment.id)
        if ctx is None:
            ctx = self._contexts[experiment.id] = Context.of(experiment)
        self._jobs[job.id] = KnownJob(job, ctx)

    def forget(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)

    def get(self, job_id: int) -> KnownJob | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)


async def report_quietly(runtime: Runtime, job_id: int, body: ReportIn, value: float) -> bool:
    """Store a quiet report in one statement: True when it was one (the answer is
    ``continue``); False when the full path must answer (nothing was written)."""
    known = runtime.known_jobs.get(job_id)
    pool, engine = runtime.quiet_pool, runtime.async_engine
    if known is None or pool is None or engine is None or not math.isfinite(value):
        return False
    job, ctx = known.job, known.ctx
    if not job.from_resource < body.step <= job.to_resource:
        return False  # the full path answers 422
    now = runtime.now()
    floor = quiet_floor(ctx, job.bracket, body.step)
    if floor >= 0 and ctx.scheduler.levels[floor] == body.step:
        return False  # the step that reaches a rung: judged there (unless it is a repeat)
    report = Report(job.trial_id, job.id, body.step, value, body.metrics or {}, now)
    stmt, params = quiet_step(
        report, hash_token(body.lease_token), now, now + ctx.config.lease_ttl_s, floor,
        step_changes(value, body.step, body.checkpoint),
    )
    plan = direct.plan_now(stmt, engine.dialect, params)
    if plan is None:  # pragma: no cover - the statement is plannable (test_quiet_reports)
        return False
    try:
        with runtime.timed("report"):
            async with pool.connection() as connection:
                rows = await direct.run_async(connection, engine.dialect, plan, params)
    except psycopg.Error:
        runtime.metrics.db_retries.labels("report_quiet").inc()
        return False  # the full path runs it again, with its retries, and answers
    return bool(rows.one().id is not None)
