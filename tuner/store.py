"""The storage contract the coordinator drives: one interface, two implementations.

:class:`tuner.storage.memory.MemoryStore` serves the simulator and unit tests;
:class:`tuner.storage.sql.SqlStore` serves the service (SQLite or PostgreSQL). The coordinator
(:mod:`tuner.coordinator`) applies the job protocol's rules (:mod:`tuner.protocol`) and calls
only these methods, so what the simulator predicts is what the service does.

A store never commits: its caller owns the transaction (one per API call, one per reaper
pass, one per simulator event). Times are float seconds since the epoch (UTC). Losses are
direction-normalised (lower is better, ``inf`` for non-finite values).

Every "at most once" rule is enforced by the store as well as checked by the coordinator:
one report per (trial, step), one rung result per (trial, rung), one promotion per
(trial, rung), one leased job per trial. A :class:`tuner.errors.ConflictError` leaves the
transaction usable (the caller may go on, as the coordinator does for a report sent twice
at once).

The hot operations (a claim, a report, a completion) are built so that a SQL store answers
each with a handful of statements: :meth:`Store.load_job` reads a job with its trial,
experiment and report in one go, writes return what they wrote, and a new trial's job is
inserted already leased (:class:`Lease`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from tuner.domain import (
    DecisionKind,
    DecisionRecord,
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Report,
    RungResult,
    Trial,
    TrialState,
)
from tuner.errors import ParamsSeen
from tuner.schedulers.base import Snapshot


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a job until when: ``token_hash`` is the SHA-256 of the worker's token."""

    worker_id: str
    token_hash: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class RungStop:
    """The writes a stop at a rung makes besides its decision: the trial's result at
    ``rung`` is closed (never promotable) and, if given and still live, its job ``job_id``
    ends DONE with ``add_resource_used`` (a refund of the steps not trained, <= 0)."""

    experiment_id: int
    job_id: int | None
    add_resource_used: int
    bracket: int
    rung: int
    trial_number: int


@dataclass(frozen=True, slots=True)
class StepBounds:
    """What must still hold in the rows when a report's writes land (:meth:`Store.record_step`),
    as numbers worked out by the coordinator (:mod:`tuner.protocol`, whose rules they are):

    - the job's lease is live for ``token_hash`` at ``now``;
    - the trial has no report at the step yet;
    - with ``floor`` (a plain write, answered ``continue`` without a judgement): no stop or
      cancel was asked, and the trial's ``rung`` is at least ``floor`` (it was judged at
      every rung the step reaches).
    """

    token_hash: str
    now: float
    floor: int | None = None


@dataclass(frozen=True, slots=True)
class Judging:
    """A hint with a report's writes (:meth:`Store.record_step`): the caller locks
    ``experiment_id`` next to judge the trial, first at ``rung`` of ``bracket`` where given,
    where the stopping test may ask how many finite results there are better than ``loss``
    (up to ``count_up_to``: the rule's limit for a rung of any size the caller expects)."""

    experiment_id: int
    bracket: int
    rung: int | None = None
    loss: float = math.inf
    count_up_to: int = 0


@dataclass(frozen=True, slots=True)
class JobContext:
    """A job with what every leased-job operation needs, read together.

    ``report`` is the trial's report at the step asked for (by default the job's
    ``to_resource``), or None.
    """

    job: Job
    trial: Trial
    experiment: Experiment
    report: Report | None


class Store(Protocol):
    """Reads and writes of one transaction. Methods raise :class:`tuner.errors.NotFound` for
    unknown ids and :class:`tuner.errors.ConflictError` when a uniqueness rule would break."""

    # ---- experiments -------------------------------------------------------------------
    def create_experiment(self, config: Any, now: float) -> Experiment:
        """Insert a running experiment from a validated ``ExperimentConfig``."""

    def get_experiment(self, experiment_id: int, *, lock: bool = False) -> Experiment:
        """Load an experiment; ``lock=True`` serialises every decider of this experiment
        until the transaction ends (PostgreSQL: ``SELECT ... FOR UPDATE``)."""

    def set_experiment_state(
        self, experiment_id: int, state: ExperimentState, now: float, reason: str | None = None
    ) -> None:
        """Also records why, when the service chose the state itself (``reason``); any
        other change clears it."""

    def recent_job_ends(self, experiment_id: int, limit: int) -> list[JobState]:
        """The states of the experiment's jobs that ended in one of the states the breaker
        counts (:data:`tuner.protocol.BREAKER_COUNTS`) since its state last changed, latest
        first, at most ``limit``."""

    def set_scheduler_state(self, experiment_id: int, state: dict[str, Any]) -> None: ...

    def add_resource_used(self, experiment_id: int, amount: int) -> None: ...

    # ---- trials ------------------------------------------------------------------------
    def create_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        *,
        state: TrialState = TrialState.PENDING,
        add_resource_used: int = 0,
    ) -> Trial:
        """Insert trial number ``n_trials`` (0-based) in ``state`` (PENDING, or RUNNING for a
        trial whose job is created leased), bump ``n_trials`` and add ``add_resource_used``
        to the experiment's ``resource_used``."""

    def start_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        *,
        rung: int,
        resource: int,
        lease: Lease,
        reason: dict[str, Any],
    ) -> tuple[Trial, Job]:
        """A claim's new trial: :meth:`create_trial` (RUNNING, ``resource`` counted), the
        CONTINUE decision that started it (``reason``) and its job from 0 to ``resource`` at
        ``rung``, leased (:meth:`create_job`). PostgreSQL: one statement.

        Raises:
            ParamsSeen: the experiment has a trial with ``params_key`` (nothing written)."""

    def get_trial(self, trial_id: int) -> Trial: ...

    def get_trial_by_number(self, experiment_id: int, number: int) -> Trial: ...

    def update_trial(self, trial_id: int, now: float, **changes: Any) -> Trial:
        """Set the named fields of :class:`tuner.domain.Trial` (``state``, ``rung``,
        ``resource``, ``checkpoint``, ``checkpoint_step``, ``best_loss``, ``last_value``,
        ``retries``, ``stop_requested``, ``ended_at``) and ``updated_at = now``."""

    def count_active(self, experiment_id: int) -> int:
        """Trials in PENDING, RUNNING or LOST."""

    def unfinished_trials(self, experiment_id: int) -> list[Trial]:
        """Trials not yet in a final state (used once, when the experiment ends)."""

    # ---- jobs --------------------------------------------------------------------------
    def create_job(
        self,
        trial: Trial,
        rung: int,
        from_resource: int,
        to_resource: int,
        checkpoint: str | None,
        attempt: int,
        now: float,
        lease: Lease | None = None,
    ) -> Job:
        """Insert a QUEUED job, or a LEASED one when ``lease`` is given; ConflictError if the
        trial already has a queued or leased job."""

    def get_job(self, job_id: int) -> Job: ...

    def load_job(self, job_id: int, *, step: int | None = None) -> JobContext:
        """The job, its trial, its experiment and the trial's report at ``step`` (default:
        the job's ``to_resource``), read together and without locks."""

    def next_queued_job(self, experiment_id: int) -> Job | None:
        """The oldest QUEUED job of the experiment (PostgreSQL: ``SKIP LOCKED``)."""

    def lease_job(self, job_id: int, worker_id: str, token_hash: str, expires_at: float) -> Job:
        """QUEUED -> LEASED, binding the lease token's hash to the job."""

    def renew_lease(
        self, job_id: int, token_hash: str, now: float, expires_at: float
    ) -> Job | None:
        """Compare-and-set: extend the lease iff the job is LEASED, the token matches and the
        lease has not expired at ``now``. ``None`` when any of that fails."""

    def end_job(
        self, job_id: int, state: JobState, now: float, *, add_resource_used: int = 0
    ) -> bool:
        """Compare-and-set LEASED or QUEUED -> ``state``; False if the job was not in either.
        If it ended, ``add_resource_used`` (negative: a refund) goes to its experiment's
        ``resource_used`` (PostgreSQL: in the same statement)."""

    def expire_job(self, job_id: int, now: float) -> bool:
        """Compare-and-set LEASED -> EXPIRED iff the lease ended before ``now`` (re-checked in
        the same statement, so a report that renewed the lease meanwhile wins)."""

    def expired_jobs(self, now: float, limit: int) -> list[Job]:
        """LEASED jobs whose lease ended before ``now``, oldest first (any experiment)."""

    def active_job_of_trial(self, trial_id: int) -> Job | None:
        """The trial's QUEUED or LEASED job, if any."""

    # ---- reports -----------------------------------------------------------------------
    def get_report(self, trial_id: int, step: int) -> Report | None: ...

    def add_report(self, report: Report) -> None:
        """Insert; ConflictError if (trial, step) exists."""

    def supersede_report(self, stored: Report, by_job_id: int, now: float) -> None:
        """Move ``stored`` (the trial's report at its step, written by ``stored.job_id``) to
        the trial's history, as replaced by job ``by_job_id``; the step is then free for that
        job's report. Nothing happens if another transaction moved it first."""

    def record_step(
        self,
        report: Report,
        bounds: StepBounds,
        expires_at: float,
        *,
        judging: Judging | None = None,
        **changes: Any,
    ) -> Trial | None:
        """A report's writes together, if ``bounds`` hold: renew the lease of
        ``report.job_id`` to ``expires_at``, :meth:`add_report` and :meth:`update_trial`
        with ``changes``. None when a bound does not hold (nothing written); NotFound for
        an unknown job. ConflictError only when the same step is stored concurrently by
        another transaction (the lease was renewed, nothing else written). PostgreSQL: one
        statement.

        ``judging`` is a hint that the caller locks the job's experiment next
        (:meth:`get_experiment` with ``lock=True``) to judge the trial: a store may take that
        lock in the same statement and answer that call without another, and read in the same
        round trip (after the lock) the size of the rung named there and the count it names,
        for the judgement's snapshot and rung insert (PostgreSQL)."""

    # ---- rungs -------------------------------------------------------------------------
    def add_rung_result(self, experiment_id: int, result: RungResult) -> None:
        """Insert and count it in its rung; ConflictError if (trial, rung) exists (a store
        that sends the insert with its next statement raises it from there)."""

    def get_rung_result(self, trial_id: int, rung: int) -> RungResult | None: ...

    def mark_promoted(self, experiment_id: int, bracket: int, rung: int, trial_number: int) -> None:
        """Record that the trial left ``rung`` by promotion; ConflictError if it already did."""

    def promote(
        self,
        experiment_id: int,
        bracket: int,
        rung: int,
        trial_number: int,
        now: float,
        *,
        add_resource_used: int = 0,
    ) -> Trial:
        """:meth:`mark_promoted`, then set the trial RUNNING (its job is created leased) and
        add ``add_resource_used`` to the experiment's ``resource_used``; returns the trial.
        A SQL store does all of it in one statement where it can."""

    def close_rung_result(
        self, experiment_id: int, bracket: int, rung: int, trial_number: int
    ) -> None:
        """Make a result unpromotable (its trial was stopped by hand, failed or cancelled)."""

    # ---- decisions ---------------------------------------------------------------------
    def add_decision(self, record: DecisionRecord) -> None: ...

    def settle_trial(
        self, record: DecisionRecord, now: float, *, stop: RungStop | None = None, **changes: Any
    ) -> Trial:
        """:meth:`add_decision` and :meth:`update_trial` of the same trial, together (every
        decision about a trial changes it); with ``stop``, first :meth:`close_rung_result`
        and :meth:`end_job` as it says (:func:`settle_in_steps`). PostgreSQL: one
        statement."""

    # ---- what schedulers and samplers read ----------------------------------------------
    def has_params(self, experiment_id: int, params_key: str) -> bool: ...

    def results_at_highest_level(
        self, experiment_id: int, min_count: int
    ) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        """The (rung, [(params, loss)]) of the highest rung index (over all brackets) that has
        at least ``min_count`` results, or None."""

    def snapshot(
        self, experiment: Experiment, *, can_start: bool, n_active: int | None = None
    ) -> Snapshot:
        """A :class:`tuner.schedulers.base.Snapshot` over this transaction's view.

        ``n_active=None``: counted (:meth:`count_active`) when the scheduler first asks. Build
        the snapshot after this operation's rung writes; it may read its counters once."""


def settle_in_steps(
    store: Store, record: DecisionRecord, now: float, stop: RungStop | None, **changes: Any
) -> Trial:
    """:meth:`Store.settle_trial` as its parts, for stores without round trips to save."""
    store.get_trial(record.trial_id)  # NotFound before anything is written
    if stop is not None:  # the close first: it is what may refuse (a promoted result)
        store.close_rung_result(stop.experiment_id, stop.bracket, stop.rung, stop.trial_number)
        if stop.job_id is not None:
            job_id, refund = stop.job_id, stop.add_resource_used
            store.end_job(job_id, JobState.DONE, now, add_resource_used=refund)
    store.add_decision(record)
    return store.update_trial(record.trial_id, now, **changes)


def start_trial_in_steps(
    store: Store,
    experiment_id: int,
    bracket: int,
    params: dict[str, Any],
    params_key: str,
    now: float,
    rung: int,
    resource: int,
    lease: Lease,
    reason: dict[str, Any],
) -> tuple[Trial, Job]:
    """:meth:`Store.start_trial` as its parts, for stores without round trips to save
    (memory, SQLite)."""
    if store.has_params(experiment_id, params_key):
        raise ParamsSeen(f"experiment {experiment_id} has tried these params already")
    trial = store.create_trial(
        experiment_id,
        bracket,
        params,
        params_key,
        now,
        state=TrialState.RUNNING,
        add_resource_used=resource,
    )
    store.add_decision(DecisionRecord(trial.id, DecisionKind.CONTINUE, reason, None, now))
    job = store.create_job(trial, rung, 0, resource, None, 0, now, lease)
    return trial, job
