"""The SQL :class:`tuner.store.Store` (:class:`SqlStore`), mirroring
:class:`tuner.storage.memory.MemoryStore` method for method.

A :class:`SqlStore` runs one transaction's statements through an
:class:`~tuner.storage.sql.executor.Executor` (over an ORM Session or a connection whose
transaction the caller owns); it returns domain values, never rows, and never commits,
rolls back or closes. Every statement is SQLAlchemy Core over the tables of
:mod:`tuner.storage.models` (no ORM identity map to keep fresh), and each call is as few
round trips as SQLite allows:

- writes return what they wrote (``UPDATE ... RETURNING``, SQLite >= 3.35 and PostgreSQL);
- inserts that may break a uniqueness rule are ``INSERT ... ON CONFLICT DO NOTHING
  RETURNING id``: no row back means a conflict, raised as
  :class:`~tuner.errors.ConflictError` with the transaction still usable (no SAVEPOINT);
- state changes are compare-and-set ``UPDATE ... WHERE state IN (...)`` statements whose
  result is checked; only when one fails is the row read again, to tell "unknown id" from
  "wrong state"; a report's writes are guarded by the protocol's rules
  (:mod:`tuner.storage.sql.guards`);
- :meth:`SqlStore.load_job` reads a job, its trial, its experiment and one report in one
  joined ``SELECT``.

PostgreSQL's store (:class:`tuner.storage.sql.postgres.PostgresStore`) extends this one:
the writes that take two or more statements here are one statement each there.

A foreign-key violation (an unknown trial or job id in an insert) raises
:class:`~tuner.errors.NotFound`; on PostgreSQL the transaction is then aborted, which is
fine because such an operation fails as a whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, Table, func, insert, select, update
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
from tuner.ranking import counts
from tuner.storage.models import RUNG_CLOSED, RUNG_OPEN, RUNG_PROMOTED
from tuner.storage.sql.cache import TransactionCache
from tuner.storage.sql.executor import Executor, Rows
from tuner.storage.sql.ranking import RANK_TRIAL, rank_params
from tuner.storage.sql.snapshot import COUNTERS_AND_QUEUED, SqlSnapshot, counters_of
from tuner.storage.sql.statements import (
    ACTIVE_JOB_OF_TRIAL,
    ADD_RESOURCE,
    COUNT_ACTIVE,
    COUNT_LEFT,
    END_JOB,
    EXPIRE_JOB,
    EXPIRED_JOBS,
    GET_EXPERIMENT,
    GET_JOB,
    GET_REPORT,
    GET_RUNG_RESULT,
    GET_TRIAL,
    GET_TRIAL_BY_NUMBER,
    HAS_PARAMS,
    INSERT_DECISION,
    KEEP_SUPERSEDED,
    LEASE_JOB,
    LEAVE_RUNG,
    LOAD_JOB_AT_END,
    LOAD_JOB_AT_STEP,
    LOCK_EXPERIMENT,
    NEXT_QUEUED,
    NUMBER_TRIAL,
    RECENT_JOB_ENDS,
    RENEW_FOR_STEP,
    RENEW_LEASE,
    TAKE_REPORT,
    UNFINISHED,
    WHY_NOT_LEFT,
    statements_for,
    update_trial_statement,
)
from tuner.storage.sql.tables import (
    EXP,
    EXPERIMENTS,
    JOBS,
    N_EXPERIMENT_COLUMNS,
    N_JOB_COLUMNS,
    N_TRIAL_COLUMNS,
    REPORTS,
    RESULT,
    RUNG_RESULTS,
    RUNGS,
    TRIAL,
    TRIALS,
    bound,
    config_to_json,
    experiment_of,
    is_foreign_key_violation,
    job_of,
    report_value,
    rung_result_of,
    rung_row,
    split_value,
    stored_loss,
    trial_of,
    trial_values,
)
from tuner.store import (
    JobContext,
    Judging,
    Lease,
    RungStop,
    StepBounds,
    settle_in_steps,
    start_trial_in_steps,
)

if TYPE_CHECKING:
    from tuner.schedulers.base import Snapshot
    from tuner.store import Store


class SqlStore:
    """A :class:`tuner.store.Store` over one transaction (see the module docstring)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.cache = TransactionCache()
        self._sql = statements_for(executor.dialect_name)
        # A claim follows a job's end in this transaction (the caller's hint): a stop's
        # settle may then read what the claim's first statement would, in its round trip.
        self.claim_follows = False

    @property
    def session(self) -> Session:
        """The ORM Session of this transaction (made on first use over a connection)."""
        return self.executor.session

    @property
    def is_postgres(self) -> bool:
        return self.executor.is_postgres

    def flush(self) -> None:
        """Send what waits for a round trip (PostgreSQL's rung inserts) and what the ORM
        Session holds (if one was made). Every transaction's owner calls it before the
        commit (``api.writer.Writer`` does)."""
        self.executor.flush()

    def execute(self, stmt: Executable, params: dict[str, Any]) -> CursorResult[Any] | Rows:
        """Run one statement in this transaction."""
        self.cache.statement_runs()
        return self.executor.run(stmt, params)

    def _insert_once(
        self, table: Table, values: dict[str, Any], conflict: str, missing: str
    ) -> int:
        """``INSERT ... ON CONFLICT DO NOTHING RETURNING id``: the new id, ConflictError
        (transaction usable) when a uniqueness rule holds it back, NotFound for a missing
        parent row."""
        try:
            new_id = self.execute(self._sql.insert_once[table.name], values).scalar()
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFound(missing) from None
            raise
        if new_id is None:
            raise ConflictError(conflict)
        return int(new_id)

    def _experiment_changed(self, experiment_id: int, **values: Any) -> None:
        stmt = update(EXPERIMENTS).where(EXP.id == experiment_id).values(**values)
        if self.execute(stmt, {}).rowcount == 0:
            raise NotFound(f"experiment {experiment_id} does not exist")

    # ---- experiments -------------------------------------------------------------------
    def create_experiment(self, config: Any, now: float) -> Experiment:
        new_id = self.execute(
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
            .returning(EXP.id),
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
        locked = self.cache.locked
        if lock and locked is not None and locked.id == experiment_id:
            self.cache.locked = None
            self.cache.experiments[experiment_id] = locked
            return locked  # locked by the statement just run (record_step, a settle)
        stmt = LOCK_EXPERIMENT if lock else GET_EXPERIMENT
        row = self.execute(stmt, {"e_id": experiment_id}).first()
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        experiment = self.cache.experiments[experiment_id] = experiment_of(row)
        return experiment

    def known_experiment(self, experiment_id: int) -> Experiment:
        """The experiment as this transaction last read it (read now if it has not): for
        what never changes, its document (like :meth:`known_job`)."""
        experiment = self.cache.experiments.get(experiment_id)
        return experiment if experiment is not None else self.get_experiment(experiment_id)

    def set_experiment_state(
        self, experiment_id: int, state: ExperimentState, now: float, reason: str | None = None
    ) -> None:
        ended = now if state.is_finished() else None
        self._experiment_changed(
            experiment_id, state=state, ended_at=ended, updated_at=now, state_reason=reason
        )

    def recent_job_ends(self, experiment_id: int, limit: int) -> list[JobState]:
        rows = self.execute(RECENT_JOB_ENDS, {"e_id": experiment_id, "limit_": limit})
        return [JobState(state) for (state,) in rows]

    def set_scheduler_state(self, experiment_id: int, state: dict[str, Any]) -> None:
        self._experiment_changed(experiment_id, scheduler_state=dict(state))

    def add_resource_used(self, experiment_id: int, amount: int) -> None:
        result = self.execute(ADD_RESOURCE, {"e_id": experiment_id, "amount_": amount})
        if result.rowcount == 0:
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
        self.cache.counters_changed(experiment_id)
        number, new_id = self._number_and_insert_trial(
            experiment_id, bracket, params, params_key, now, state, add_resource_used
        )
        return Trial.new(new_id, experiment_id, number, bracket, params, state, now)

    def _number_and_insert_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        state: TrialState,
        add_resource_used: int,
    ) -> tuple[int, int]:
        counted = self.execute(NUMBER_TRIAL, {"e_id": experiment_id, "amount_": add_resource_used})
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
        self.execute(
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
        return start_trial_in_steps(
            self, experiment_id, bracket, params, params_key, now, rung, resource, lease, reason
        )

    def get_trial(self, trial_id: int) -> Trial:
        row = self.execute(GET_TRIAL, {"t_id": trial_id}).first()
        if row is None:
            raise NotFound(f"trial {trial_id} does not exist")
        return trial_of(row)

    def get_trial_by_number(self, experiment_id: int, number: int) -> Trial:
        row = self.execute(GET_TRIAL_BY_NUMBER, {"e_id": experiment_id, "number_": number}).first()
        if row is None:
            raise NotFound(f"experiment {experiment_id} has no trial number {number}")
        return trial_of(row)

    def update_trial(self, trial_id: int, now: float, **changes: Any) -> Trial:
        values = trial_values(now, changes)
        stmt = update_trial_statement(tuple(sorted(values)))
        row = self.execute(stmt, {**bound(values), "t_id": trial_id}).first()
        if row is None:
            raise NotFound(f"trial {trial_id} does not exist")
        return trial_of(row)

    def count_active(self, experiment_id: int) -> int:
        return int(self.execute(COUNT_ACTIVE, {"e_id": experiment_id}).scalar() or 0)

    def unfinished_trials(self, experiment_id: int) -> list[Trial]:
        return [trial_of(row) for row in self.execute(UNFINISHED, {"e_id": experiment_id})]

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
        return self.cache.seen(Job(id=new_id, **values))

    def get_job(self, job_id: int) -> Job:
        row = self.execute(GET_JOB, {"j_id": job_id}).first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return self.cache.seen(job_of(row))

    def known_job(self, job_id: int) -> Job:
        """The job as this transaction last read or wrote it, read now if it has not. For
        what never changes once a job is leased (its experiment, trial and worker): routes
        use it after a coordinator call, at no cost."""
        job = self.cache.jobs.get(job_id)
        return job if job is not None else self.get_job(job_id)

    def load_job(self, job_id: int, *, step: int | None = None) -> JobContext:
        if step is None:
            row = self.execute(LOAD_JOB_AT_END, {"j_id": job_id}).first()
        else:
            row = self.execute(LOAD_JOB_AT_STEP, {"j_id": job_id, "step_": step}).first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        job = self.cache.seen(job_of(row[:N_JOB_COLUMNS]))
        trial = trial_of(row[N_JOB_COLUMNS : N_JOB_COLUMNS + N_TRIAL_COLUMNS])
        at_experiment = N_JOB_COLUMNS + N_TRIAL_COLUMNS
        at_report = at_experiment + N_EXPERIMENT_COLUMNS
        experiment = experiment_of(row[at_experiment:at_report])
        self.cache.experiments[experiment.id] = experiment
        r_job, r_step, r_value, r_kind, r_metrics, r_at = row[at_report:]
        report = None
        if r_step is not None:
            value = report_value(r_value, r_kind)
            report = Report(trial.id, r_job, r_step, value, dict(r_metrics), r_at)
        return JobContext(job, trial, experiment, report)

    def next_queued_job(self, experiment_id: int) -> Job | None:
        """Also reads the experiment's counters, in the same statement, for the next
        :meth:`snapshot` of this experiment in this transaction (a claim asks for both, in
        that order, under the experiment's lock; this store's own writes to the counters
        drop them). The job itself is then read with ``SKIP LOCKED`` (rare: a re-queued
        job)."""
        read = self.cache.claim_read
        if read is not None and read[0] == experiment_id:  # read by the settle just run
            self.cache.claim_read = None
            counters, queued = read[1], read[2]
        else:
            counters, queued = counters_of(
                self.execute(COUNTERS_AND_QUEUED[self.is_postgres], {"e_id": experiment_id})
            )
        self.cache.prefetched[experiment_id] = counters
        if queued is None:
            return None
        row = self.execute(NEXT_QUEUED, {"e_id": experiment_id}).first()
        return self.cache.seen(job_of(row)) if row is not None else None

    def lease_job(self, job_id: int, worker_id: str, token_hash: str, expires_at: float) -> Job:
        row = self.execute(
            LEASE_JOB,
            {"j_id": job_id, "v_worker": worker_id, "v_hash": token_hash, "v_until": expires_at},
        ).first()
        if row is None:
            job = self.get_job(job_id)  # NotFound for an unknown id
            raise ConflictError(f"job {job_id} is {job.state}, not queued")
        return self.cache.seen(job_of(row))

    def renew_lease(
        self, job_id: int, token_hash: str, now: float, expires_at: float
    ) -> Job | None:
        row = self.execute(
            RENEW_LEASE,
            {"j_id": job_id, "hash_": token_hash, "now_": now, "v_until": expires_at},
        ).first()
        if row is None:
            self.get_job(job_id)  # NotFound for an unknown id
            return None
        return self.cache.seen(job_of(row))

    def end_job(
        self, job_id: int, state: JobState, now: float, *, add_resource_used: int = 0
    ) -> bool:
        params = {"j_id": job_id, "v_state": state, "v_now": now}
        if self.execute(END_JOB, params).rowcount == 1:
            if add_resource_used:
                self.add_resource_used(self.known_job(job_id).experiment_id, add_resource_used)
            return True
        self.get_job(job_id)  # NotFound for an unknown id
        return False

    def expire_job(self, job_id: int, now: float) -> bool:
        result = self.execute(EXPIRE_JOB, {"j_id": job_id, "now_": now, "v_now": now})
        if result.rowcount == 1:
            return True
        self.get_job(job_id)  # NotFound for an unknown id
        return False

    def expired_jobs(self, now: float, limit: int) -> list[Job]:
        rows = self.execute(EXPIRED_JOBS, {"now_": now, "limit_": limit})
        return [job_of(row) for row in rows]

    def active_job_of_trial(self, trial_id: int) -> Job | None:
        row = self.execute(ACTIVE_JOB_OF_TRIAL, {"t_id": trial_id}).first()
        return job_of(row) if row is not None else None

    # ---- reports -----------------------------------------------------------------------
    def get_report(self, trial_id: int, step: int) -> Report | None:
        row = self.execute(GET_REPORT, {"t_id": trial_id, "step_": step}).first()
        if row is None:
            return None
        job_id, step, value, kind, metrics, created_at = tuple(row)
        return Report(trial_id, job_id, step, report_value(value, kind), dict(metrics), created_at)

    def supersede_report(self, stored: Report, by_job_id: int, now: float) -> None:
        # DELETE ... RETURNING: of two transactions moving the same row, one gets it.
        params = {"t_id": stored.trial_id, "step_": stored.step, "j_id": stored.job_id}
        row = self.execute(TAKE_REPORT, params).first()
        if row is None:
            return
        value, kind, metrics, created_at = tuple(row)
        self.execute(
            KEEP_SUPERSEDED,
            {
                "trial_id": stored.trial_id, "job_id": stored.job_id, "step": stored.step,
                "value": value, "value_kind": kind, "metrics": metrics,
                "created_at": created_at, "superseded_by_job_id": by_job_id,
                "superseded_at": now,
            },
        )

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
        bounds: StepBounds,
        expires_at: float,
        *,
        judging: Judging | None = None,  # SQLite holds its one write lock already
        **changes: Any,
    ) -> Trial | None:
        params = {
            "j_id": report.job_id,
            "hash_": bounds.token_hash,
            "now_": bounds.now,
            "v_until": expires_at,
            "r_step": report.step,
            "floor_": bounds.floor,
        }
        renewed = self.execute(RENEW_FOR_STEP[bounds.floor is not None], params).first()
        if renewed is None:
            self.get_job(report.job_id)  # NotFound for an unknown id
            return None
        self.cache.seen(job_of(renewed))
        self.add_report(report)
        return self.update_trial(report.trial_id, bounds.now, **changes)

    # ---- rungs -------------------------------------------------------------------------
    def add_rung_result(self, experiment_id: int, result: RungResult) -> None:
        self.cache.counters_changed(experiment_id)
        row = rung_row(experiment_id, result)
        left, promoted = int(row["status"] != RUNG_OPEN), int(row["status"] == RUNG_PROMOTED)
        conflict = f"trial {result.trial_number} already has a result at rung {result.rung}"
        missing = f"trial {result.trial_id} does not exist"
        self._insert_once(RUNG_RESULTS, row, conflict, missing)
        counters = {"n_results": 1, "n_left": left, "n_promoted": promoted}
        keys = {"experiment_id": experiment_id, "bracket": result.bracket, "rung": result.rung}
        self.execute(self._sql.count_result, {**keys, **counters})
        if counts(result):  # the trial's ranked result (tuner.ranking), in step with it
            self.execute(RANK_TRIAL, rank_params(result))

    def get_rung_result(self, trial_id: int, rung: int) -> RungResult | None:
        row = self.execute(GET_RUNG_RESULT, {"t_id": trial_id, "rung_": rung}).first()
        if row is None:
            self.get_trial(trial_id)  # NotFound for an unknown trial, like the memory store
            return None
        return rung_result_of(row)

    def _leave(
        self, experiment_id: int, bracket: int, rung: int, number: int, promoted: bool
    ) -> int | None:
        """Open -> promoted or closed in one compare-and-set; the trial's id, or None when
        closing an already closed result (a no-op)."""
        self.cache.counters_changed(experiment_id)
        where = {"e_id": experiment_id, "number_": number, "rung_": rung}
        status = RUNG_PROMOTED if promoted else RUNG_CLOSED
        params = {**where, "bracket_": bracket, "v_status": status, "promoted_": int(promoted)}
        trial_id = self._compare_and_leave(params)
        if trial_id is None:  # why not: read the row
            row = self.execute(WHY_NOT_LEFT, where).first()
            if row is None or row.bracket != bracket:
                raise NotFound(f"trial {number} has no result at rung {rung} of bracket {bracket}")
            if row.status == RUNG_PROMOTED:
                raise ConflictError(f"trial {number} was already promoted from rung {rung}")
            if row.status == RUNG_CLOSED and promoted:
                raise ConflictError(f"trial {number} is closed at rung {rung}")
            if row.status == RUNG_CLOSED:
                return None
            raise ConflictError(f"trial {number} left rung {rung} concurrently")
        return int(trial_id)

    def _compare_and_leave(self, params: dict[str, Any]) -> int | None:
        """The compare-and-set of a result leaving its rung, and the rung's counters: the
        trial's id, or None when the result was not open."""
        trial_id = self.execute(LEAVE_RUNG, params).scalar()
        if trial_id is not None:
            self.execute(COUNT_LEFT, params)
        return None if trial_id is None else int(trial_id)

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
        trial_id = self._leave(experiment_id, bracket, rung, trial_number, promoted=True)
        if trial_id is None:  # pragma: no cover - _leave raises for a closed result
            raise ConflictError(f"trial {trial_number} is closed at rung {rung}")
        if add_resource_used:
            self.add_resource_used(experiment_id, add_resource_used)
        return self.update_trial(trial_id, now, state=TrialState.RUNNING)

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
            self.execute(INSERT_DECISION, values)
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFound(f"trial {record.trial_id} does not exist") from None
            raise

    def settle_trial(
        self, record: DecisionRecord, now: float, *, stop: RungStop | None = None, **changes: Any
    ) -> Trial:
        return settle_in_steps(self, record, now, stop, **changes)

    # ---- what schedulers and samplers read ----------------------------------------------
    def has_params(self, experiment_id: int, params_key: str) -> bool:
        return bool(self.execute(HAS_PARAMS, {"e_id": experiment_id, "key_": params_key}).scalar())

    def results_at_highest_level(
        self, experiment_id: int, min_count: int
    ) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        total = func.sum(RUNGS.c.n_results)
        best = self.execute(
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
        rows = self.execute(
            select(TRIAL.params, RESULT.loss, RESULT.loss_rank_kind)
            .select_from(RUNG_RESULTS)
            .join(TRIALS, TRIAL.id == RESULT.trial_id)
            .where(RESULT.experiment_id == experiment_id, RESULT.rung == best)
            .order_by(RESULT.id),
            {},
        ).all()
        return best, [(dict(row.params), stored_loss(row.loss, row.loss_rank_kind)) for row in rows]

    def snapshot(
        self, experiment: Experiment, *, can_start: bool, n_active: int | None = None
    ) -> SqlSnapshot:
        counters = self.cache.prefetched.pop(experiment.id, None)
        return SqlSnapshot(
            self.execute,
            self.cache,
            experiment,
            can_start=can_start,
            n_active=n_active if n_active is not None else lambda: self.count_active(experiment.id),
            counters=counters,
            postgres=self.is_postgres,
        )


if TYPE_CHECKING:  # mypy proves that the classes satisfy the protocols

    def _is_store(executor: Executor) -> Store:
        return SqlStore(executor)

    def _is_snapshot(store: SqlStore, experiment: Experiment) -> Snapshot:
        return store.snapshot(experiment, can_start=True, n_active=0)
