"""The SQL :class:`tuner.store.Store` (SQLite or PostgreSQL), mirroring
:class:`tuner.storage.memory.MemoryStore` method for method.

:class:`SqlStore` takes a :class:`~sqlalchemy.orm.Session` whose transaction the caller owns;
it returns domain values, never rows, and never commits, rolls back or closes.

Every statement is SQLAlchemy Core over the tables of :mod:`tuner.storage.models` (no ORM
identity map to keep fresh), and each store call is as few round trips as the database
allows, since a claim or a completion holds the experiment's lock for all of its statements:

- writes return what they wrote (``UPDATE ... RETURNING``, PostgreSQL and SQLite >= 3.35);
- inserts that may break a uniqueness rule are ``INSERT ... ON CONFLICT DO NOTHING
  RETURNING id``: no row back means a conflict, raised as
  :class:`~tuner.errors.ConflictError` with the transaction still usable (no SAVEPOINT);
- state changes are compare-and-set ``UPDATE ... WHERE state IN (...)`` statements whose
  result is checked; only when one fails is the row read again, to tell "unknown id" from
  "wrong state";
- :meth:`SqlStore.load_job` reads a job, its trial, its experiment and one report in one
  joined ``SELECT``.

A foreign-key violation (an unknown trial or job id in an insert) raises
:class:`~tuner.errors.NotFound`; on PostgreSQL the transaction is then aborted, which is
fine because such an operation fails as a whole.

Experiment documents are immutable once stored, and parsing one with pydantic costs more
than the query that reads it, so parsed documents are cached in a bounded LRU keyed by the
stored JSON text itself: the cache is a pure function of its key and can never hand one
database's document to another (keys like ``(id, created_at)`` could: fresh databases reuse
ids). The experiment row is still read every time, for its state and counters.

:class:`SqlSnapshot` reads all rung and bracket counters of the experiment, with each rung's
first open result (an index seek per rung), in one query the first time the scheduler asks
(they are few rows: brackets x rungs); a claim gets them from :meth:`SqlStore.next_queued_job`,
which reads them in the same statement as the queue. Ranks are index-range counts on
``rung_results`` (ordered by ``(loss_rank_kind, loss, trial_number)``, with and without
``status`` in front); no query loads a rung or the experiment's trials, except
:meth:`SqlSnapshot.rung_entries` (small rungs only).

On PostgreSQL the writes that take two or more statements on SQLite (a new trial with its
bracket counter, its decision and its leased job; a report with its lease renewal and trial
update; a rung result with its rung counter and the stopping test's rank; a promotion; a
decision with its trial update, and a stop's job end and rung close) are one statement each,
with data-modifying CTEs.

The parts live in one module each: :mod:`tuner.storage.rows` (tables, column lists, and
conversions between rows and domain values), :mod:`tuner.storage.statements` (the prebuilt
Core statements, per dialect where they differ), :mod:`tuner.storage.compound` (running
PostgreSQL's merged writes) and :mod:`tuner.storage.snapshot` (:class:`SqlSnapshot` and its
queries). This module keeps :class:`SqlStore` and re-exports the names other modules import
from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Result, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable

from tuner.domain import (
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
from tuner.errors import ConflictError, NotFound
from tuner.storage import direct
from tuner.store import (
    JobContext,
    Lease,
    RungAhead,
    RungStop,
    record_step_in_steps,
    settle_in_steps,
    start_trial_in_steps,
)

if TYPE_CHECKING:
    from tuner.schedulers.base import Snapshot
    from tuner.store import Store

from tuner.storage import compound
from tuner.storage.models import RUNG_CLOSED, RUNG_OPEN, RUNG_PROMOTED
from tuner.storage.rows import (
    _E,
    _NE,
    _NJ,
    _NT,
    _T,
    BRACKETS,
    CONFIG_CACHE_SIZE,
    DECISIONS,
    EXPERIMENT_COLUMNS,
    EXPERIMENTS,
    JOB_COLUMNS,
    JOBS,
    REPORTS,
    RUNG_RESULTS,
    RUNGS,
    TRIAL_COLUMNS,
    TRIALS,
    _bound,
    _experiment_of,
    _is_foreign_key_violation,
    _job_of,
    _report_value,
    _rung_result,
    _trial_of,
    _trial_values,
    config_from_json,
    config_to_json,
    join_value,
    loss_columns,
    rung_row,
    split_value,
    stored_loss,
)
from tuner.storage.rows import _job as _job  # re-exported: tuner.storage.queries
from tuner.storage.rows import _trial as _trial  # re-exported: tuner.storage.queries
from tuner.storage.snapshot import (
    _COUNTERS_AND_QUEUED,
    Counters,
    Head,
    SqlSnapshot,
    _counters_of,
)
from tuner.storage.statements import (
    _ACTIVE_JOB_OF_TRIAL,
    _ADD_RESOURCE,
    _COUNT_ACTIVE,
    _COUNT_LEFT,
    _END_JOB,
    _EXPIRE_JOB,
    _EXPIRED_JOBS,
    _GET_EXPERIMENT,
    _GET_JOB,
    _GET_REPORT,
    _GET_RUNG_RESULT,
    _GET_TRIAL,
    _GET_TRIAL_BY_NUMBER,
    _HAS_PARAMS,
    _INSERT_DECISION,
    _LEASE_JOB,
    _LEAVE_RUNG,
    _LOAD_JOB_AT_END,
    _LOAD_JOB_AT_STEP,
    _LOCK_EXPERIMENT,
    _NEXT_QUEUED,
    _NUMBER_TRIAL,
    _RENEW_LEASE,
    _RR,
    _UNFINISHED,
    _WHY_NOT_LEFT,
    _postgres_writes,
    _statements_for,
    _update_trial,
)

__all__ = [
    "BRACKETS",
    "CONFIG_CACHE_SIZE",
    "DECISIONS",
    "EXPERIMENTS",
    "EXPERIMENT_COLUMNS",
    "JOBS",
    "JOB_COLUMNS",
    "REPORTS",
    "RUNGS",
    "RUNG_RESULTS",
    "TRIALS",
    "TRIAL_COLUMNS",
    "Counters",
    "Head",
    "SqlSnapshot",
    "SqlStore",
    "config_from_json",
    "config_to_json",
    "join_value",
    "loss_columns",
    "split_value",
    "stored_loss",
]

class SqlStore:
    """A :class:`tuner.store.Store` over one SQLAlchemy session (see the module docstring),
    or over a connection in a transaction (:meth:`on_connection`)."""

    def __init__(self, session: Session) -> None:
        self._session: Session | None = session
        self._connection: Connection | None = None
        self._init(session.get_bind().dialect.name)

    @classmethod
    def on_connection(cls, connection: Connection) -> SqlStore:
        """A store on ``connection``, whose transaction the caller began and ends: no ORM
        Session unless a caller asks for :attr:`session` (every statement of the store is
        Core; the Session's own work per transaction is a tenth of a hot transaction's CPU).
        Call :meth:`flush` before the commit."""
        store = cls.__new__(cls)
        store._session, store._connection = None, connection
        store._init(connection.dialect.name)
        return store

    @property
    def session(self) -> Session:
        """The ORM Session of this transaction (made on first use over a connection)."""
        if self._session is None:
            # Bound to a connection in a transaction, it joins that transaction.
            self._session = Session(bind=self._connection)
        return self._session

    def flush(self) -> None:
        """Over a connection: write what the ORM Session holds (if one was made). Raises
        (so the transaction rolls back) if a rung result written ahead was not added by the
        caller after all: its decision would not be the coordinator's."""
        if self._ahead:
            raise RuntimeError(f"rung results written ahead and not added: {list(self._ahead)}")
        if self._session is not None:
            self._session.flush()

    def _init(self, dialect: str) -> None:
        self._dialect = dialect
        self._direct = dialect == "postgresql"
        # The experiment as the last statement locked and read it (record_step's hint):
        # get_experiment(lock=True) answers from it, if no statement ran since.
        self._locked: Experiment | None = None
        self._sql = _statements_for(self._dialect)
        # Jobs and experiments as this transaction last read or wrote them: see known_job.
        self._jobs: dict[int, Job] = {}
        self._experiments: dict[int, Experiment] = {}
        # Counters read by next_queued_job, for the next snapshot: see there.
        self._prefetched: dict[int, Counters] = {}
        # A claim follows a job's end in this transaction (the caller's hint): a stop's
        # settle then reads what the claim's first statement would, in its round trip.
        self.claim_follows = False
        # (experiment id, counters, oldest queued job) as that read left them: valid until
        # the next statement, like _locked.
        self._claim_read: tuple[int, Counters, int | None] | None = None
        # Rung sizes this transaction's own rung insert returned (PostgreSQL), exact while
        # it holds the rung's row: the snapshot needs no counter read for them.
        self._rung_sizes: dict[tuple[int, int, int], int] = {}
        # The stopping test's rank that the same insert counted: rung -> (loss, cap, count).
        self._ranks: dict[tuple[int, int, int], tuple[float, int, int]] = {}
        # Rung results written ahead with a report (record_step's rung_ahead), until the
        # caller's add_rung_result takes them: (trial id, rung) -> (hint, the insert's row).
        self._ahead: dict[tuple[int, int], tuple[RungAhead, Any]] = {}

    # ---- helpers -----------------------------------------------------------------------
    @property
    def is_postgres(self) -> bool:
        return self._dialect == "postgresql"

    def _run(self, stmt: Executable, params: dict[str, Any]) -> Result[Any]:
        # Core statements on the session's connection: the same transaction, without the
        # ORM's per-statement work (every statement here is Core). On PostgreSQL, on the
        # driver's cursor where the statement allows (tuner.storage.direct).
        self._locked = self._claim_read = None  # true only until the next statement
        connection = self._transaction_connection()
        if self._direct:
            plan = direct.plan_for(stmt, connection.dialect, params)
            if plan is not None:
                return direct.run(connection, plan, params)  # type: ignore[return-value]
        return connection.execute(stmt, params)

    def _transaction_connection(self) -> Connection:
        connection = self._connection
        if connection is None:
            connection = self._connection = self.session.connection()
        return connection

    def _run_pair(
        self, first: tuple[Executable, dict[str, Any]], then: tuple[Executable, dict[str, Any]]
    ) -> tuple[direct.Rows, direct.Rows] | None:
        """Two statements in one round trip (``then`` after ``first``: it sees what
        ``first`` did): PostgreSQL's pipeline (:func:`direct.run_pair`), once both have
        plans; None when they have none yet (the caller runs them one by one)."""
        if not self._direct:
            return None
        connection = self._transaction_connection()
        plan_a = direct.plan_for(first[0], connection.dialect, first[1])
        plan_b = direct.plan_for(then[0], connection.dialect, then[1])
        if plan_a is None or plan_b is None:
            return None
        self._locked = self._claim_read = None
        return direct.run_pair(connection, (plan_a, first[1]), (plan_b, then[1]))

    def _run_then_claim_read(
        self, stmt: Executable, params: dict[str, Any], experiment_id: int
    ) -> Result[Any] | direct.Rows:
        """``stmt``, then (in the same round trip, once both statements have plans) the
        read that the claim which follows starts with (:meth:`next_queued_job`)."""
        claim_read = _COUNTERS_AND_QUEUED[self.is_postgres]
        pair = self._run_pair((stmt, params), (claim_read, {"e_id": experiment_id}))
        if pair is None:
            return self._run(stmt, params)
        rows, read = pair
        counters, queued = _counters_of(read)  # type: ignore[arg-type]
        self._claim_read = (experiment_id, counters, queued)
        return rows

    def _insert_once(
        self, table: Table, values: dict[str, Any], conflict: str, missing: str
    ) -> int:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: the new id, ConflictError
        (transaction usable) when a uniqueness rule holds it back, NotFound for a missing
        parent row."""
        try:
            new_id = self._run(self._sql.insert_once[table.name], values).scalar()
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFound(missing) from None
            raise
        if new_id is None:
            raise ConflictError(conflict)
        return int(new_id)

    def _experiment_changed(self, experiment_id: int, **values: Any) -> None:
        result = self._run(update(EXPERIMENTS).where(_E.id == experiment_id).values(**values), {})
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"experiment {experiment_id} does not exist")

    def _counters_changed(self, experiment_id: int) -> None:
        self._prefetched.pop(experiment_id, None)
        self._rung_sizes.clear()
        self._ranks.clear()

    def _seen(self, job: Job) -> Job:
        self._jobs[job.id] = job
        return job

    # ---- experiments -------------------------------------------------------------------
    def create_experiment(self, config: Any, now: float) -> Experiment:
        new_id = self._run(
            insert(EXPERIMENTS)
            .values(
                name=config.name,
                config=config_to_json(config),
                state=ExperimentState.RUNNING,
                scheduler_state={},
                n_trials=0,
                resource_used=0,
                created_at=now,
                updated_at=now,
            )
            .returning(_E.id),
            {},
        ).scalar_one()
        return Experiment(
            id=new_id,
            name=config.name,
            config=config,
            state=ExperimentState.RUNNING,
            scheduler_state={},
            n_trials=0,
            resource_used=0,
            created_at=now,
        )

    def get_experiment(self, experiment_id: int, *, lock: bool = False) -> Experiment:
        locked = self._locked
        if lock and locked is not None and locked.id == experiment_id:
            self._locked = None
            self._experiments[experiment_id] = locked
            return locked  # locked by the statement just run (record_step, a settle)
        stmt = _LOCK_EXPERIMENT if lock else _GET_EXPERIMENT
        row = self._run(stmt, {"e_id": experiment_id}).first()
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        experiment = self._experiments[experiment_id] = _experiment_of(row)
        return experiment

    def known_experiment(self, experiment_id: int) -> Experiment:
        """The experiment as this transaction last read it (read now if it has not): for
        what never changes, its document (like :meth:`known_job`)."""
        experiment = self._experiments.get(experiment_id)
        return experiment if experiment is not None else self.get_experiment(experiment_id)

    def set_experiment_state(self, experiment_id: int, state: ExperimentState, now: float) -> None:
        ended = now if state.is_finished() else None
        self._experiment_changed(experiment_id, state=state, ended_at=ended, updated_at=now)

    def set_scheduler_state(self, experiment_id: int, state: dict[str, Any]) -> None:
        self._experiment_changed(experiment_id, scheduler_state=dict(state))

    def add_resource_used(self, experiment_id: int, amount: int) -> None:
        result = self._run(_ADD_RESOURCE, {"e_id": experiment_id, "amount_": amount})
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"experiment {experiment_id} does not exist")

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
        self._counters_changed(experiment_id)
        if self.is_postgres:
            number, new_id = compound.create_trial(
                self, experiment_id, bracket, params, params_key, now, state, add_resource_used
            )
        else:
            number, new_id = self._create_trial_steps(
                experiment_id, bracket, params, params_key, now, state, add_resource_used
            )
        return Trial.new(new_id, experiment_id, number, bracket, params, state, now)

    def _create_trial_steps(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        state: TrialState,
        add_resource_used: int,
    ) -> tuple[int, int]:
        counted = self._run(_NUMBER_TRIAL, {"e_id": experiment_id, "amount_": add_resource_used})
        n_trials = counted.scalar()
        if n_trials is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        number = n_trials - 1
        new_id = self._insert_once(
            TRIALS,
            {
                "experiment_id": experiment_id,
                "number": number,
                "bracket": bracket,
                "params": params,
                "params_key": params_key,
                "state": state,
                "rung": -1,
                "resource": 0,
                "checkpoint_step": 0,
                "retries": 0,
                "stop_requested": False,
                "created_at": now,
                "updated_at": now,
            },
            f"experiment {experiment_id} already has trial {number}",
            f"experiment {experiment_id} does not exist",
        )
        self._run(
            self._sql.count_trial,
            {"experiment_id": experiment_id, "bracket": bracket, "n_trials": 1},
        )
        return number, new_id

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
        if not self.is_postgres:  # SQLite: one by one, at no round-trip cost
            return start_trial_in_steps(
                self, experiment_id, bracket, params, params_key, now, rung, resource, lease, reason
            )
        return compound.start_trial(
            self, experiment_id, bracket, params, params_key, now, rung, resource, lease, reason
        )

    def get_trial(self, trial_id: int) -> Trial:
        row = self._run(_GET_TRIAL, {"t_id": trial_id}).first()
        if row is None:
            raise NotFound(f"trial {trial_id} does not exist")
        return _trial_of(row)

    def get_trial_by_number(self, experiment_id: int, number: int) -> Trial:
        row = self._run(_GET_TRIAL_BY_NUMBER, {"e_id": experiment_id, "number_": number}).first()
        if row is None:
            raise NotFound(f"experiment {experiment_id} has no trial number {number}")
        return _trial_of(row)

    def update_trial(self, trial_id: int, now: float, **changes: Any) -> Trial:
        values = _trial_values(now, changes)
        stmt = _update_trial(tuple(sorted(values)))
        row = self._run(stmt, {**_bound(values), "t_id": trial_id}).first()
        if row is None:
            raise NotFound(f"trial {trial_id} does not exist")
        return _trial_of(row)

    def count_active(self, experiment_id: int) -> int:
        return int(self._run(_COUNT_ACTIVE, {"e_id": experiment_id}).scalar() or 0)

    def unfinished_trials(self, experiment_id: int) -> list[Trial]:
        return [_trial_of(row) for row in self._run(_UNFINISHED, {"e_id": experiment_id})]

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
        values: dict[str, Any] = {
            "experiment_id": trial.experiment_id,
            "trial_id": trial.id,
            "trial_number": trial.number,
            "bracket": trial.bracket,
            "rung": rung,
            "from_resource": from_resource,
            "to_resource": to_resource,
            "checkpoint": checkpoint,
            "state": JobState.QUEUED if lease is None else JobState.LEASED,
            "attempt": attempt,
            "worker_id": None if lease is None else lease.worker_id,
            "lease_expires_at": None if lease is None else lease.expires_at,
            "created_at": now,
            "token_hash": None if lease is None else lease.token_hash,
        }
        new_id = self._insert_once(
            JOBS,
            values,
            f"trial {trial.id} already has a queued or leased job",
            f"trial {trial.id} does not exist",
        )
        return self._seen(Job(id=new_id, **values))

    def get_job(self, job_id: int) -> Job:
        row = self._run(_GET_JOB, {"j_id": job_id}).first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return self._seen(_job_of(row))

    def known_job(self, job_id: int) -> Job:
        """The job as this transaction last read or wrote it, read now if it has not. For
        what never changes once a job is leased (its experiment, trial and worker): routes
        use it after a coordinator call, at no cost."""
        job = self._jobs.get(job_id)
        return job if job is not None else self.get_job(job_id)

    def load_job(self, job_id: int, *, step: int | None = None) -> JobContext:
        if step is None:
            row = self._run(_LOAD_JOB_AT_END, {"j_id": job_id}).first()
        else:
            row = self._run(_LOAD_JOB_AT_STEP, {"j_id": job_id, "step_": step}).first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        job = self._seen(_job_of(row[:_NJ]))
        trial = _trial_of(row[_NJ : _NJ + _NT])
        experiment = _experiment_of(row[_NJ + _NT : _NJ + _NT + _NE])
        self._experiments[experiment.id] = experiment
        r_job, r_step, r_value, r_kind, r_metrics, r_at = row[_NJ + _NT + _NE :]
        report = None
        if r_step is not None:
            value = _report_value(r_value, r_kind)
            report = Report(trial.id, r_job, r_step, value, dict(r_metrics), r_at)
        return JobContext(job, trial, experiment, report)

    def next_queued_job(self, experiment_id: int) -> Job | None:
        """Also reads the experiment's counters, in the same statement, for the next
        :meth:`snapshot` of this experiment in this transaction (a claim asks for both, in
        that order, under the experiment's lock; this store's own writes to the counters
        drop them). The job itself is then read with ``SKIP LOCKED`` (rare: a re-queued
        job)."""
        read = self._claim_read
        if read is not None and read[0] == experiment_id:  # read by the settle just run
            self._claim_read = None
            counters, queued = read[1], read[2]
        else:
            counters, queued = _counters_of(
                self._run(_COUNTERS_AND_QUEUED[self.is_postgres], {"e_id": experiment_id})
            )
        self._prefetched[experiment_id] = counters
        if queued is None:
            return None
        row = self._run(_NEXT_QUEUED, {"e_id": experiment_id}).first()
        return self._seen(_job_of(row)) if row is not None else None

    def lease_job(self, job_id: int, worker_id: str, token_hash: str, expires_at: float) -> Job:
        row = self._run(
            _LEASE_JOB,
            {"j_id": job_id, "v_worker": worker_id, "v_hash": token_hash, "v_until": expires_at},
        ).first()
        if row is None:
            job = self.get_job(job_id)  # NotFound for an unknown id
            raise ConflictError(f"job {job_id} is {job.state}, not queued")
        return self._seen(_job_of(row))

    def renew_lease(
        self, job_id: int, token_hash: str, now: float, expires_at: float
    ) -> Job | None:
        row = self._run(
            _RENEW_LEASE,
            {"j_id": job_id, "hash_": token_hash, "now_": now, "v_until": expires_at},
        ).first()
        if row is None:
            self.get_job(job_id)  # NotFound for an unknown id
            return None
        return self._seen(_job_of(row))

    def end_job(
        self, job_id: int, state: JobState, now: float, *, add_resource_used: int = 0
    ) -> bool:
        params = {"j_id": job_id, "v_state": state, "v_now": now}
        if add_resource_used and self.is_postgres:
            params["amount_"] = add_resource_used
            if self._run(_postgres_writes().end_job, params).scalar():
                return True
        elif self._run(_END_JOB, params).rowcount == 1:  # type: ignore[attr-defined]
            if add_resource_used:
                self.add_resource_used(self.known_job(job_id).experiment_id, add_resource_used)
            return True
        self.get_job(job_id)  # NotFound for an unknown id
        return False

    def expire_job(self, job_id: int, now: float) -> bool:
        result = self._run(_EXPIRE_JOB, {"j_id": job_id, "now_": now, "v_now": now})
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return True
        self.get_job(job_id)  # NotFound for an unknown id
        return False

    def expired_jobs(self, now: float, limit: int) -> list[Job]:
        rows = self._run(_EXPIRED_JOBS, {"now_": now, "limit_": limit})
        return [_job_of(row) for row in rows]

    def active_job_of_trial(self, trial_id: int) -> Job | None:
        row = self._run(_ACTIVE_JOB_OF_TRIAL, {"t_id": trial_id}).first()
        return _job_of(row) if row is not None else None

    # ---- reports -----------------------------------------------------------------------
    def get_report(self, trial_id: int, step: int) -> Report | None:
        row = self._run(_GET_REPORT, {"t_id": trial_id, "step_": step}).first()
        if row is None:
            return None
        job_id, step, value, kind, metrics, created_at = tuple(row)
        return Report(trial_id, job_id, step, _report_value(value, kind), dict(metrics), created_at)

    def add_report(self, report: Report) -> None:
        value, kind = split_value(report.value)
        self._insert_once(
            REPORTS,
            {
                "trial_id": report.trial_id,
                "job_id": report.job_id,
                "step": report.step,
                "value": value,
                "value_kind": kind,
                "metrics": dict(report.metrics),
                "created_at": report.created_at,
            },
            f"trial {report.trial_id} already has a report at step {report.step}",
            f"trial {report.trial_id} or job {report.job_id} does not exist",
        )

    def record_step(
        self,
        report: Report,
        token_hash: str,
        now: float,
        expires_at: float,
        *,
        lock_experiment: bool = False,
        rung_ahead: RungAhead | None = None,
        **changes: Any,
    ) -> Trial | None:
        if not self.is_postgres:  # SQLite: no data-modifying CTEs, and the write lock held
            return record_step_in_steps(self, report, token_hash, now, expires_at, **changes)
        return compound.record_step(
            self, report, token_hash, now, expires_at, changes, lock=lock_experiment,
            ahead=rung_ahead if lock_experiment else None,
        )

    # ---- rungs -------------------------------------------------------------------------
    def add_rung_result(
        self, experiment_id: int, result: RungResult, *, rank_eta: int | None = None
    ) -> None:
        self._counters_changed(experiment_id)
        ahead = self._ahead.pop((result.trial_id, result.rung), None)
        if ahead is not None:  # written with the report (PostgreSQL)
            compound.took_ahead(self, experiment_id, result, rank_eta, ahead)
            return
        row = rung_row(experiment_id, result)
        status = row["status"]
        left, promoted = int(status != RUNG_OPEN), int(status == RUNG_PROMOTED)
        if self.is_postgres:  # insert and count in one statement
            compound.add_rung_result(
                self, experiment_id, result, row, left=left, promoted=promoted, rank_eta=rank_eta
            )
            return
        conflict = f"trial {result.trial_number} already has a result at rung {result.rung}"
        missing = f"trial {result.trial_id} does not exist"
        self._insert_once(RUNG_RESULTS, row, conflict, missing)
        counters = {"n_results": 1, "n_left": left, "n_promoted": promoted}
        keys = {"experiment_id": experiment_id, "bracket": result.bracket, "rung": result.rung}
        self._run(self._sql.count_result, {**keys, **counters})

    def get_rung_result(self, trial_id: int, rung: int) -> RungResult | None:
        row = self._run(_GET_RUNG_RESULT, {"t_id": trial_id, "rung_": rung}).first()
        if row is None:
            self.get_trial(trial_id)  # NotFound for an unknown trial, like the memory store
            return None
        return _rung_result(row)

    def _leave(
        self, experiment_id: int, bracket: int, rung: int, number: int, promoted: bool
    ) -> int | None:
        """Open -> promoted or closed in one compare-and-set; the trial's id, or None when
        closing an already closed result (a no-op)."""
        self._counters_changed(experiment_id)
        where = {"e_id": experiment_id, "number_": number, "rung_": rung}
        status = RUNG_PROMOTED if promoted else RUNG_CLOSED
        params = {**where, "bracket_": bracket, "v_status": status, "promoted_": int(promoted)}
        if self.is_postgres:  # the compare-and-set and the rung's counters in one statement
            trial_id = self._run(_postgres_writes().leave, params).scalar()
        else:
            trial_id = self._run(_LEAVE_RUNG, params).scalar()
        if trial_id is None:  # why not: read the row
            row = self._run(_WHY_NOT_LEFT, where).first()
            if row is None or row.bracket != bracket:
                raise NotFound(f"trial {number} has no result at rung {rung} of bracket {bracket}")
            if row.status == RUNG_PROMOTED:
                raise ConflictError(f"trial {number} was already promoted from rung {rung}")
            if row.status == RUNG_CLOSED and promoted:
                raise ConflictError(f"trial {number} is closed at rung {rung}")
            if row.status == RUNG_CLOSED:
                return None
            raise ConflictError(f"trial {number} left rung {rung} concurrently")
        if not self.is_postgres:
            self._run(_COUNT_LEFT, params)
        return int(trial_id)

    def mark_promoted(self, experiment_id: int, bracket: int, rung: int, trial_number: int) -> None:
        self._leave(experiment_id, bracket, rung, trial_number, promoted=True)

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
        self._counters_changed(experiment_id)
        if not self.is_postgres:
            trial_id = self._leave(experiment_id, bracket, rung, trial_number, promoted=True)
            if trial_id is None:  # pragma: no cover - _leave raises for a closed result
                raise ConflictError(f"trial {trial_number} is closed at rung {rung}")
            if add_resource_used:
                self.add_resource_used(experiment_id, add_resource_used)
            return self.update_trial(trial_id, now, state=TrialState.RUNNING)
        return compound.promote(
            self, experiment_id, bracket, rung, trial_number, now, add_resource_used
        )

    def close_rung_result(
        self, experiment_id: int, bracket: int, rung: int, trial_number: int
    ) -> None:
        self._leave(experiment_id, bracket, rung, trial_number, promoted=False)

    # ---- decisions ---------------------------------------------------------------------
    def add_decision(self, record: DecisionRecord) -> None:
        values = {
            "trial_id": record.trial_id,
            "kind": record.kind,
            "reason": dict(record.reason),
            "step": record.step,
            "created_at": record.created_at,
        }
        try:
            self._run(_INSERT_DECISION, values)
        except IntegrityError as exc:
            if _is_foreign_key_violation(exc):
                raise NotFound(f"trial {record.trial_id} does not exist") from None
            raise

    def settle_trial(
        self, record: DecisionRecord, now: float, *, stop: RungStop | None = None, **changes: Any
    ) -> Trial:
        if not self.is_postgres:
            return settle_in_steps(self, record, now, stop, **changes)
        return compound.settle_trial(self, record, now, stop, changes)

    # ---- what schedulers and samplers read ----------------------------------------------
    def has_params(self, experiment_id: int, params_key: str) -> bool:
        return bool(self._run(_HAS_PARAMS, {"e_id": experiment_id, "key_": params_key}).scalar())

    def results_at_highest_level(
        self, experiment_id: int, min_count: int
    ) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        total = func.sum(RUNGS.c.n_results)
        best = self._run(
            select(RUNGS.c.rung)
            .where(RUNGS.c.experiment_id == experiment_id)
            .group_by(RUNGS.c.rung)
            .having(total >= min_count, total > 0)
            .order_by(RUNGS.c.rung.desc())
            .limit(1),
            {},
        ).scalar()
        if best is None:
            return None
        rows = self._run(
            select(_T.params, _RR.loss, _RR.loss_rank_kind)
            .select_from(RUNG_RESULTS)
            .join(TRIALS, _T.id == _RR.trial_id)
            .where(_RR.experiment_id == experiment_id, _RR.rung == best)
            .order_by(_RR.id),
            {},
        ).all()
        return best, [(dict(row.params), stored_loss(row.loss, row.loss_rank_kind)) for row in rows]

    def snapshot(
        self, experiment: Experiment, *, can_start: bool, n_active: int | None = None
    ) -> SqlSnapshot:
        counters = self._prefetched.pop(experiment.id, None)
        return SqlSnapshot(
            self, experiment, can_start=can_start, n_active=n_active, counters=counters
        )


if TYPE_CHECKING:  # mypy proves that the classes satisfy the protocols

    def _is_store(session: Session) -> Store:
        return SqlStore(session)

    def _is_snapshot(store: SqlStore, experiment: Experiment) -> Snapshot:
        return store.snapshot(experiment, can_start=True, n_active=0)
