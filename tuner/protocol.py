"""The rules of the job protocol, each written once, pure (no I/O, no clock).

| rule | home |
| --- | --- |
| the token holds the job (tokens are kept as hashes) | :func:`holds_token`, :func:`hash_token` |
| the lease is live | :func:`lease_is_live` |
| a stop or a cancel was asked | :func:`stop_asked` |
| the step is in the job's range | :func:`in_range` |
| a report of a stored step repeats it, or conflicts | :func:`same_value` |
| a retry's report of a step an ended job reported replaces it | :func:`supersedes` |
| a repeat is answered while live, or after the decision that ended it | :func:`answers_repeat` |
| output is kept while live, or after a decision until the trial runs on | :func:`keeps_output` |
| the step reaches a rung (the stopping form judges there) | :func:`plan_report` |
| jobs failing in a row pause their experiment (the breaker) | :func:`breaker_trips` |
| a non-finite value is judged at once (and stops the trial) | :func:`plan_report` |
| a report or completion that names its metric names the experiment's | :func:`require_metric` |

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
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.domain import (
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Report,
    Trial,
    TrialState,
    ValueKind,
)
from tuner.errors import MetricMismatch
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


def supersedes(job: Job, stored: Report) -> bool:
    """A report by ``job`` of a step its trial has stored already replaces the stored one
    when an earlier job of the trial wrote it: the job is a retry from an earlier checkpoint
    (its worker was lost, or it failed) and trained the step again, with values that a
    non-deterministic run changes. The replaced report stays in the trial's history; a rung
    judgement made from it stands. Within one job a step is stored once (:func:`same_value`)."""
    return stored.job_id < job.id


#: How a decision ends a job: done (stop, pause, end of training) or, by a cancel, cancelled.
ENDED_BY_DECISION = (JobState.DONE, JobState.CANCELLED)


def trial_went_on(job: Job, trial: Trial) -> bool:
    """The trial went on without ``job`` after a decision ended it: it runs again, or has a
    result at a higher rung. Only a pause at the job's rung (then a promotion) allows that."""
    return trial.rung > job.rung or trial.state in _RUNS_AGAIN


def answers_repeat(job: Job, now: float) -> bool:
    """A repeated call of a job (a report of a step it stored, a completion) is answered
    as before while the job's lease is live, or after a decision ended the job (the answer
    was lost on its way); a job that was released, failed or expired is no longer its
    worker's to speak for."""
    return lease_is_live(job, now) or job.state in ENDED_BY_DECISION


def keeps_output(job: Job, trial: Trial, now: float) -> bool:
    """A job's output is appended to its trial's while its lease is live, and after a
    decision ended it (a stop, a pause at a rung, the end, a cancel) until the trial went on
    (:func:`trial_went_on`): the script's last lines, sent once it exited. Never after a
    release, a failure or an expiry, when another worker may be writing the trial's output
    already."""
    if lease_is_live(job, now):
        return True
    return job.state in ENDED_BY_DECISION and not trial_went_on(job, trial)


_RUNS_AGAIN = (TrialState.PENDING, TrialState.RUNNING, TrialState.LOST)

#: The job endings the breaker counts: the script's own outcome (a lost worker's expired
#: lease, a release or a cancel say nothing about the script).
BREAKER_COUNTS = (JobState.DONE, JobState.FAILED)


def breaker_trips(recent: Sequence[JobState], threshold: int) -> bool:
    """A script that cannot run (a missing module, a wrong path) fails every job: once the
    last ``threshold`` jobs that ended since the experiment's state last changed all failed,
    with none done among them, the experiment pauses itself rather than spend its budget on
    retries (``recent``: their states, latest first; ``threshold`` 0: never). A lost worker's
    job (an expired lease) is not the script's failure and does not count; a resume starts
    the count again."""
    return (
        threshold > 0
        and len(recent) >= threshold
        and all(state is JobState.FAILED for state in recent[:threshold])
    )


def require_metric(metric: str, mode: str, named: str | None, what: str = "report") -> None:
    """A report or completion may name the metric its value is (``named``); it must be the
    experiment's ``metric`` (optimised in ``mode``). None: it does not say, and is taken
    as the experiment's metric.

    Raises:
        MetricMismatch: ``named`` is another metric (the value would be ranked as if it
            were ``metric``: an accuracy minimised as a loss).
    """
    if named is not None and named != metric:
        raise MetricMismatch(
            f"this experiment optimises {metric} ({mode}), but the {what} is for {named}: "
            f"report {metric}, or submit a document whose metric is {named}"
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
