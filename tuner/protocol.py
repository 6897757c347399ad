"""The rules of the job protocol, each written once, pure (no I/O, no clock).

| rule | home |
| --- | --- |
| the token holds the job (tokens are kept as hashes) | :func:`holds_token`, :func:`hash_token` |
| the lease is live | :func:`lease_is_live` |
| a stop or a cancel was asked | :func:`stop_asked` |
| the step is in the job's range | :func:`in_range` |
| a report of a stored step repeats it, or conflicts | :func:`same_value` |
| the step reaches a rung (the stopping form judges there) | :func:`plan_report` |
| a non-finite value is judged at once (and stops the trial) | :func:`plan_report` |

Every caller works from these: the coordinator (:mod:`tuner.coordinator.report`), the
in-memory store (the simulator's) and the service's fast path for plain reports. Where a
store must check a rule again when its writes land (another transaction may have changed
the rows since they were read), it gets the numbers from a :class:`ReportPlan`
(:class:`tuner.store.StepBounds`) and compares them in its statement; the SQL stores build
those comparisons in one place (:mod:`tuner.storage.sql.guards`) and never work out a rung
themselves.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from tuner.domain import Experiment, ExperimentState, Job, JobState, Trial, ValueKind
from tuner.schedulers.base import Scheduler
from tuner.store import StepBounds


def hash_token(token: str) -> str:
    """Lease and API tokens are stored and compared as their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def holds_token(job: Job, token_hash: str) -> bool:
    """The worker's lease token (its SHA-256) is the one bound to ``job``."""
    return job.token_hash is not None and job.token_hash == token_hash


def lease_is_live(job: Job, now: float) -> bool:
    """The job is leased and its lease has not run out at ``now``."""
    return (
        job.state is JobState.LEASED
        and job.lease_expires_at is not None
        and job.lease_expires_at >= now
    )


def stop_asked(trial: Trial, experiment: Experiment) -> bool:
    """The trial was stopped by hand or its experiment cancelled: the next report or
    heartbeat of its job answers ``stop``."""
    return trial.stop_requested or experiment.state is ExperimentState.CANCELLED


def same_value(stored: float, value: float) -> bool:
    """A report of a stored step repeats it (answered as before) when its value is the same:
    equal, or non-finite of the same kind (NaN is NaN here); otherwise it is a conflict."""
    return ValueKind.of(stored) is ValueKind.of(value) and (
        not math.isfinite(value) or stored == value
    )


def in_range(job: Job, step: int) -> bool:
    """A job trains from ``from_resource`` (exclusive) to ``to_resource`` (inclusive)."""
    return job.from_resource < step <= job.to_resource


@dataclass(frozen=True, slots=True)
class ReportPlan:
    """What a report at ``step`` of a job needs, from the experiment's rule and the job
    alone (what never changes once a job is leased).

    ``reached``: the rungs below the top that ``step`` reaches in the job's bracket, in the
    stopping form (which judges a trial at every such rung once); empty in the promotion
    form, which judges at a job's completion only. ``first_reach``: ``step`` is the level of
    the last of them, so this is the report that normally reaches it first.
    """

    step: int
    in_range: bool
    finite: bool
    reached: range
    first_reach: bool

    @property
    def floor(self) -> int:
        """A trial whose ``rung`` is at least this was judged at every rung ``step`` reaches
        (-1: true of every trial)."""
        return self.reached[-1] if self.reached else -1

    def rungs_to_judge(self, trial_rung: int) -> range:
        """The rungs a trial at ``trial_rung`` is judged at now, in order."""
        return range(max(self.reached.start, trial_rung + 1), self.reached.stop)

    @property
    def may_be_plain(self) -> bool:
        """Worth storing as a plain write (answered ``continue``) before the trial is read:
        finite, in range, and not the step that reaches a rung first (judged, bar a repeat).
        The write's bounds (:meth:`bounds`) make it refuse when a judgement or a stop is
        due after all."""
        return self.in_range and self.finite and not self.first_reach

    def bounds(self, token_hash: str, now: float) -> StepBounds:
        """The bounds of a plain write: the lease is live, the step is new, no stop was
        asked and the trial was judged at every rung the step reaches."""
        return StepBounds(token_hash, now, floor=self.floor)


def plan_report(scheduler: Scheduler, job: Job, step: int, value: float) -> ReportPlan:
    """The plan of a report at ``step`` with ``value`` of ``job`` under ``scheduler``."""
    reached, first_reach = range(0), False
    if scheduler.is_stopping:
        levels = scheduler.levels
        bottom = scheduler.bracket_bottom(job.bracket)
        last = bottom - 1
        for k in range(bottom, len(levels) - 1):
            if levels[k] <= step:
                last = k
        reached = range(bottom, last + 1)
        first_reach = bool(reached) and levels[last] == step
    return ReportPlan(step, in_range(job, step), math.isfinite(value), reached, first_reach)
