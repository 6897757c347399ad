"""The SQL :class:`tuner.store.Store` (SQLite or PostgreSQL), mirroring
:class:`tuner.storage.memory.MemoryStore` method for method.

:class:`SqlStore` takes a :class:`~sqlalchemy.orm.Session` whose transaction the caller owns;
it returns domain values, never rows, and never commits, rolls back or closes. Inserts that may
break a uniqueness rule run in a SAVEPOINT, so a :class:`~tuner.errors.ConflictError` leaves
the caller's transaction usable. State changes are compare-and-set ``UPDATE ... WHERE state
IN (...)`` statements that check the affected row count.

:class:`SqlSnapshot` answers the scheduler's questions with index seeks on ``rung_results``
(ordered by ``(loss_rank_kind, loss, trial_number)``, with and without ``status`` in front)
and primary-key reads of the ``rungs`` and ``brackets`` counters; no query loads a rung or
the experiment's trials, except :meth:`SqlSnapshot.rung_entries` (small rungs only).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, exists, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuner.domain import (
    DecisionRecord,
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Report,
    RungEntry,
    RungResult,
    Trial,
    TrialState,
    ValueKind,
)
from tuner.errors import ConflictError, NotFound

if TYPE_CHECKING:
    from tuner.schedulers.base import Snapshot
    from tuner.store import Store

from tuner.storage.models import (
    LOSS_FINITE,
    LOSS_NON_FINITE,
    RUNG_CLOSED,
    RUNG_OPEN,
    RUNG_PROMOTED,
    BracketRow,
    DecisionRow,
    ExperimentRow,
    JobRow,
    ReportRow,
    RungResultRow,
    RungRow,
    TrialRow,
)

_ACTIVE_TRIAL_STATES = (TrialState.PENDING, TrialState.RUNNING, TrialState.LOST)
_UNFINISHED_TRIAL_STATES = tuple(s for s in TrialState if not s.is_finished())
_LIVE_JOB_STATES = (JobState.QUEUED, JobState.LEASED)

#: Fields of :class:`tuner.domain.Trial` that :meth:`SqlStore.update_trial` may set.
_TRIAL_FIELDS = frozenset(
    {
        "state",
        "rung",
        "resource",
        "checkpoint",
        "checkpoint_step",
        "best_loss",
        "last_value",
        "retries",
        "stop_requested",
        "ended_at",
        "bracket",
        "params",
        "created_at",
    }
)


# ---- value conversions ---------------------------------------------------------------------
def split_value(value: float | None) -> tuple[float | None, ValueKind | None]:
    """A float (maybe non-finite) as a storable (finite or NULL, kind) pair."""
    if value is None:
        return None, None
    kind = ValueKind.of(value)
    return (float(value) if kind is ValueKind.FINITE else None), kind


def join_value(value: float | None, kind: ValueKind | str | None) -> float | None:
    """The inverse of :func:`split_value`."""
    if kind is None:
        return value
    return ValueKind(kind).to_float(value)


def loss_columns(loss: float) -> tuple[float, int]:
    """``(loss, loss_rank_kind)``: non-finite losses sort last (stored loss 0)."""
    return (float(loss), LOSS_FINITE) if math.isfinite(loss) else (0.0, LOSS_NON_FINITE)


def stored_loss(loss: float, rank_kind: int) -> float:
    return math.inf if rank_kind == LOSS_NON_FINITE else loss


def config_to_json(config: Any) -> dict[str, Any]:
    """The stored form of an ``ExperimentConfig`` (or an already-plain mapping)."""
    if hasattr(config, "model_dump"):
        dumped: dict[str, Any] = config.model_dump(mode="json")
        return dumped
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"cannot store a config of type {type(config).__name__}")


def config_from_json(data: dict[str, Any]) -> Any:
    from tuner.config import parse_config

    return parse_config(data)


def _experiment(row: ExperimentRow) -> Experiment:
    return Experiment(
        id=row.id,
        name=row.name,
        config=config_from_json(row.config),
        state=ExperimentState(row.state),
        scheduler_state=dict(row.scheduler_state),
        n_trials=row.n_trials,
        resource_used=row.resource_used,
        created_at=row.created_at,
        ended_at=row.ended_at,
    )


def _trial(row: TrialRow) -> Trial:
    return Trial(
        id=row.id,
        experiment_id=row.experiment_id,
        number=row.number,
        bracket=row.bracket,
        params=dict(row.params),
        state=TrialState(row.state),
        rung=row.rung,
        resource=row.resource,
        checkpoint=row.checkpoint,
        checkpoint_step=row.checkpoint_step,
        best_loss=join_value(row.best_loss, row.best_loss_kind),
        last_value=join_value(row.last_value, row.last_value_kind),
        retries=row.retries,
        stop_requested=bool(row.stop_requested),
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
    )


def _job(row: JobRow) -> Job:
    return Job(
        id=row.id,
        experiment_id=row.experiment_id,
        trial_id=row.trial_id,
        trial_number=row.trial_number,
        bracket=row.bracket,
        rung=row.rung,
        from_resource=row.from_resource,
        to_resource=row.to_resource,
        checkpoint=row.checkpoint,
        state=JobState(row.state),
        attempt=row.attempt,
        worker_id=row.worker_id,
        lease_expires_at=row.lease_expires_at,
        created_at=row.created_at,
        token_hash=row.token_hash,
    )


def _report(row: ReportRow) -> Report:
    value = join_value(row.value, row.value_kind)
    return Report(
        trial_id=row.trial_id,
        job_id=row.job_id,
        step=row.step,
        value=math.nan if value is None else value,
        metrics=dict(row.metrics),
        created_at=row.created_at,
    )


def _rung_result(row: RungResultRow) -> RungResult:
    value = join_value(row.value, row.value_kind)
    return RungResult(
        bracket=row.bracket,
        rung=row.rung,
        trial_number=row.trial_number,
        trial_id=row.trial_id,
        loss=stored_loss(row.loss, row.loss_rank_kind),
        value=math.nan if value is None else value,
        promoted=row.status == RUNG_PROMOTED,
        closed=row.status == RUNG_CLOSED,
        created_at=row.created_at,
    )


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return "UNIQUE constraint failed" in str(orig)


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23503")
    return "FOREIGN KEY constraint failed" in str(orig)


class SqlStore:
    """A :class:`tuner.store.Store` over one SQLAlchemy session (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._dialect = session.get_bind().dialect.name

    # ---- helpers -----------------------------------------------------------------------
    @property
    def is_postgres(self) -> bool:
        return self._dialect == "postgresql"

    @contextmanager
    def _guard(self, conflict: str, missing: str | None = None) -> Iterator[None]:
        """Run a write in a SAVEPOINT; unique violations become ConflictError(``conflict``)."""
        try:
            with self.session.begin_nested():
                yield
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise ConflictError(conflict) from None
            if missing is not None and _is_foreign_key_violation(exc):
                raise NotFound(missing) from None
            raise

    def _one(self, stmt: Select[Any], missing: str) -> Any:
        row = self.session.scalars(stmt.execution_options(populate_existing=True)).first()
        if row is None:
            raise NotFound(missing)
        return row

    def _experiment_row(self, experiment_id: int, *, lock: bool = False) -> ExperimentRow:
        stmt = select(ExperimentRow).where(ExperimentRow.id == experiment_id)
        if lock:
            stmt = stmt.with_for_update()
        row: ExperimentRow = self._one(stmt, f"experiment {experiment_id} does not exist")
        return row

    def _trial_row(self, trial_id: int) -> TrialRow:
        row: TrialRow = self._one(
            select(TrialRow).where(TrialRow.id == trial_id), f"trial {trial_id} does not exist"
        )
        return row

    def _job_row(self, job_id: int) -> JobRow:
        row: JobRow = self._one(
            select(JobRow).where(JobRow.id == job_id), f"job {job_id} does not exist"
        )
        return row

    def _upsert_counter(
        self,
        table: type[BracketRow] | type[RungRow],
        keys: dict[str, int],
        increments: dict[str, int],
    ) -> None:
        """``INSERT ... ON CONFLICT DO UPDATE SET col = col + n`` on both dialects."""
        dialect_insert = postgresql.insert if self.is_postgres else sqlite.insert
        stmt = dialect_insert(table).values(**keys, **increments)
        t = table.__table__
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={col: t.c[col] + n for col, n in increments.items()},
        )
        self.session.execute(stmt)

    def _experiment_changed(self, experiment_id: int, **values: Any) -> None:
        result = self.session.execute(
            update(ExperimentRow).where(ExperimentRow.id == experiment_id).values(**values),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"experiment {experiment_id} does not exist")

    # ---- experiments -------------------------------------------------------------------
    def create_experiment(self, config: Any, now: float) -> Experiment:
        row = ExperimentRow(
            name=config.name,
            config=config_to_json(config),
            state=ExperimentState.RUNNING,
            scheduler_state={},
            n_trials=0,
            resource_used=0,
            created_at=now,
            updated_at=now,
        )
        self.session.add(row)
        self.session.flush()
        return Experiment(
            id=row.id,
            name=row.name,
            config=config,
            state=ExperimentState.RUNNING,
            scheduler_state={},
            n_trials=0,
            resource_used=0,
            created_at=now,
        )

    def get_experiment(self, experiment_id: int, *, lock: bool = False) -> Experiment:
        return _experiment(self._experiment_row(experiment_id, lock=lock))

    def set_experiment_state(self, experiment_id: int, state: ExperimentState, now: float) -> None:
        ended = now if state.is_finished() else None
        self._experiment_changed(experiment_id, state=state, ended_at=ended, updated_at=now)

    def set_scheduler_state(self, experiment_id: int, state: dict[str, Any]) -> None:
        self._experiment_changed(experiment_id, scheduler_state=dict(state))

    def add_resource_used(self, experiment_id: int, amount: int) -> None:
        self._experiment_changed(experiment_id, resource_used=ExperimentRow.resource_used + amount)

    # ---- trials ------------------------------------------------------------------------
    def create_trial(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
    ) -> Trial:
        # Bumping the counter first locks the experiment row (PostgreSQL) until commit.
        number = self.session.execute(
            update(ExperimentRow)
            .where(ExperimentRow.id == experiment_id)
            .values(n_trials=ExperimentRow.n_trials + 1)
            .returning(ExperimentRow.n_trials),
            execution_options={"synchronize_session": False},
        ).scalar_one_or_none()
        if number is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        row = TrialRow(
            experiment_id=experiment_id,
            number=number - 1,
            bracket=bracket,
            params=params,
            params_key=params_key,
            state=TrialState.PENDING,
            rung=-1,
            resource=0,
            checkpoint=None,
            checkpoint_step=0,
            best_loss=None,
            best_loss_kind=None,
            last_value=None,
            last_value_kind=None,
            retries=0,
            stop_requested=False,
            created_at=now,
            updated_at=now,
            ended_at=None,
        )
        with self._guard(f"experiment {experiment_id} already has trial {number - 1}"):
            self.session.add(row)
        self._upsert_counter(
            BracketRow, {"experiment_id": experiment_id, "bracket": bracket}, {"n_trials": 1}
        )
        return _trial(row)

    def get_trial(self, trial_id: int) -> Trial:
        return _trial(self._trial_row(trial_id))

    def get_trial_by_number(self, experiment_id: int, number: int) -> Trial:
        row: TrialRow = self._one(
            select(TrialRow).where(
                TrialRow.experiment_id == experiment_id, TrialRow.number == number
            ),
            f"experiment {experiment_id} has no trial number {number}",
        )
        return _trial(row)

    def update_trial(self, trial_id: int, now: float, **changes: Any) -> Trial:
        unknown = set(changes) - _TRIAL_FIELDS
        if unknown:
            raise TypeError(f"update_trial: unknown trial fields {sorted(unknown)}")
        row = self._trial_row(trial_id)
        for name, value in changes.items():
            if name == "best_loss":
                row.best_loss, row.best_loss_kind = split_value(value)
            elif name == "last_value":
                row.last_value, row.last_value_kind = split_value(value)
            elif name == "state":
                row.state = TrialState(value)
            else:
                setattr(row, name, value)
        row.updated_at = now
        self.session.flush()
        return _trial(row)

    def count_active(self, experiment_id: int) -> int:
        count = self.session.scalar(
            select(func.count())
            .select_from(TrialRow)
            .where(
                TrialRow.experiment_id == experiment_id,
                TrialRow.state.in_(_ACTIVE_TRIAL_STATES),
            )
        )
        return int(count or 0)

    def unfinished_trials(self, experiment_id: int) -> list[Trial]:
        rows = self.session.scalars(
            select(TrialRow)
            .where(
                TrialRow.experiment_id == experiment_id,
                TrialRow.state.in_(_UNFINISHED_TRIAL_STATES),
            )
            .order_by(TrialRow.number)
            .execution_options(populate_existing=True)
        )
        return [_trial(row) for row in rows]

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
    ) -> Job:
        row = JobRow(
            experiment_id=trial.experiment_id,
            trial_id=trial.id,
            trial_number=trial.number,
            bracket=trial.bracket,
            rung=rung,
            from_resource=from_resource,
            to_resource=to_resource,
            checkpoint=checkpoint,
            state=JobState.QUEUED,
            attempt=attempt,
            worker_id=None,
            token_hash=None,
            lease_expires_at=None,
            created_at=now,
            ended_at=None,
        )
        with self._guard(
            f"trial {trial.id} already has a queued or leased job",
            missing=f"trial {trial.id} does not exist",
        ):
            self.session.add(row)
        return _job(row)

    def get_job(self, job_id: int) -> Job:
        return _job(self._job_row(job_id))

    def next_queued_job(self, experiment_id: int) -> Job | None:
        stmt = (
            select(JobRow)
            .where(JobRow.experiment_id == experiment_id, JobRow.state == JobState.QUEUED)
            .order_by(JobRow.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
        row = self.session.scalars(stmt).first()
        return _job(row) if row is not None else None

    def lease_job(self, job_id: int, worker_id: str, token_hash: str, expires_at: float) -> Job:
        result = self.session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == JobState.QUEUED)
            .values(
                state=JobState.LEASED,
                worker_id=worker_id,
                token_hash=token_hash,
                lease_expires_at=expires_at,
            ),
            execution_options={"synchronize_session": False},
        )
        job = self.get_job(job_id)  # NotFound for an unknown id
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(f"job {job_id} is {job.state}, not queued")
        return job

    def renew_lease(
        self, job_id: int, token_hash: str, now: float, expires_at: float
    ) -> Job | None:
        result = self.session.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.state == JobState.LEASED,
                JobRow.token_hash == token_hash,
                JobRow.lease_expires_at.is_not(None),
                JobRow.lease_expires_at >= now,
            )
            .values(lease_expires_at=expires_at),
            execution_options={"synchronize_session": False},
        )
        job = self.get_job(job_id)  # NotFound for an unknown id
        return job if result.rowcount == 1 else None  # type: ignore[attr-defined]

    def end_job(self, job_id: int, state: JobState, now: float) -> bool:
        result = self.session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state.in_(_LIVE_JOB_STATES))
            .values(state=state, ended_at=now),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return True
        self._job_row(job_id)  # NotFound for an unknown id
        return False

    def expire_job(self, job_id: int, now: float) -> bool:
        result = self.session.execute(
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.state == JobState.LEASED,
                JobRow.lease_expires_at < now,
            )
            .values(state=JobState.EXPIRED, ended_at=now),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return True
        self._job_row(job_id)  # NotFound for an unknown id
        return False

    def expired_jobs(self, now: float, limit: int) -> list[Job]:
        rows = self.session.scalars(
            select(JobRow)
            .where(JobRow.state == JobState.LEASED, JobRow.lease_expires_at < now)
            .order_by(JobRow.lease_expires_at, JobRow.id)
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        return [_job(row) for row in rows]

    def active_job_of_trial(self, trial_id: int) -> Job | None:
        row = self.session.scalars(
            select(JobRow)
            .where(JobRow.trial_id == trial_id, JobRow.state.in_(_LIVE_JOB_STATES))
            .limit(1)
            .execution_options(populate_existing=True)
        ).first()
        return _job(row) if row is not None else None

    # ---- reports -----------------------------------------------------------------------
    def get_report(self, trial_id: int, step: int) -> Report | None:
        row = self.session.scalars(
            select(ReportRow).where(ReportRow.trial_id == trial_id, ReportRow.step == step)
        ).first()
        return _report(row) if row is not None else None

    def add_report(self, report: Report) -> None:
        value, kind = split_value(report.value)
        stmt = insert(ReportRow).values(
            trial_id=report.trial_id,
            job_id=report.job_id,
            step=report.step,
            value=value,
            value_kind=kind,
            metrics=dict(report.metrics),
            created_at=report.created_at,
        )
        with self._guard(
            f"trial {report.trial_id} already has a report at step {report.step}",
            missing=f"trial {report.trial_id} or job {report.job_id} does not exist",
        ):
            self.session.execute(stmt)

    # ---- rungs -------------------------------------------------------------------------
    def add_rung_result(self, experiment_id: int, result: RungResult) -> None:
        loss, rank_kind = loss_columns(result.loss)
        value, kind = split_value(result.value)
        status = RUNG_PROMOTED if result.promoted else RUNG_CLOSED if result.closed else RUNG_OPEN
        stmt = insert(RungResultRow).values(
            experiment_id=experiment_id,
            bracket=result.bracket,
            rung=result.rung,
            trial_number=result.trial_number,
            trial_id=result.trial_id,
            loss=loss,
            loss_rank_kind=rank_kind,
            value=value,
            value_kind=kind,
            status=status,
            created_at=result.created_at,
        )
        with self._guard(
            f"trial {result.trial_number} already has a result at rung {result.rung}",
            missing=f"trial {result.trial_id} does not exist",
        ):
            self.session.execute(stmt)
        self._upsert_counter(
            RungRow,
            {"experiment_id": experiment_id, "bracket": result.bracket, "rung": result.rung},
            {
                "n_results": 1,
                "n_left": int(status != RUNG_OPEN),
                "n_promoted": int(status == RUNG_PROMOTED),
            },
        )

    def get_rung_result(self, trial_id: int, rung: int) -> RungResult | None:
        row = self.session.scalars(
            select(RungResultRow)
            .where(RungResultRow.trial_id == trial_id, RungResultRow.rung == rung)
            .execution_options(populate_existing=True)
        ).first()
        if row is None:
            self._trial_row(trial_id)  # NotFound for an unknown trial, like the memory store
            return None
        return _rung_result(row)

    def _leave(
        self, experiment_id: int, bracket: int, rung: int, number: int, promoted: bool
    ) -> None:
        where = (
            RungResultRow.experiment_id == experiment_id,
            RungResultRow.trial_number == number,
            RungResultRow.rung == rung,
        )
        row = self.session.execute(
            select(RungResultRow.id, RungResultRow.bracket, RungResultRow.status).where(*where)
        ).first()
        if row is None or row.bracket != bracket:
            raise NotFound(f"trial {number} has no result at rung {rung} of bracket {bracket}")
        if row.status == RUNG_PROMOTED:
            raise ConflictError(f"trial {number} was already promoted from rung {rung}")
        if row.status == RUNG_CLOSED:
            if promoted:
                raise ConflictError(f"trial {number} is closed at rung {rung}")
            return
        new_status = RUNG_PROMOTED if promoted else RUNG_CLOSED
        result = self.session.execute(
            update(RungResultRow)
            .where(RungResultRow.id == row.id, RungResultRow.status == RUNG_OPEN)
            .values(status=new_status),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise ConflictError(f"trial {number} left rung {rung} concurrently")
        self.session.execute(
            update(RungRow)
            .where(
                RungRow.experiment_id == experiment_id,
                RungRow.bracket == bracket,
                RungRow.rung == rung,
            )
            .values(n_left=RungRow.n_left + 1, n_promoted=RungRow.n_promoted + int(promoted)),
            execution_options={"synchronize_session": False},
        )

    def mark_promoted(self, experiment_id: int, bracket: int, rung: int, trial_number: int) -> None:
        self._leave(experiment_id, bracket, rung, trial_number, promoted=True)

    def close_rung_result(
        self, experiment_id: int, bracket: int, rung: int, trial_number: int
    ) -> None:
        self._leave(experiment_id, bracket, rung, trial_number, promoted=False)

    # ---- decisions ---------------------------------------------------------------------
    def add_decision(self, record: DecisionRecord) -> None:
        with self._guard("decision conflict", missing=f"trial {record.trial_id} does not exist"):
            self.session.execute(
                insert(DecisionRow).values(
                    trial_id=record.trial_id,
                    kind=record.kind,
                    reason=dict(record.reason),
                    step=record.step,
                    created_at=record.created_at,
                )
            )

    # ---- what schedulers and samplers read ----------------------------------------------
    def has_params(self, experiment_id: int, params_key: str) -> bool:
        found = self.session.scalar(
            select(
                exists().where(
                    TrialRow.experiment_id == experiment_id, TrialRow.params_key == params_key
                )
            )
        )
        return bool(found)

    def results_at_highest_level(
        self, experiment_id: int, min_count: int
    ) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        total = func.sum(RungRow.n_results)
        best = self.session.scalar(
            select(RungRow.rung)
            .where(RungRow.experiment_id == experiment_id)
            .group_by(RungRow.rung)
            .having(total >= min_count, total > 0)
            .order_by(RungRow.rung.desc())
            .limit(1)
        )
        if best is None:
            return None
        rows = self.session.execute(
            select(TrialRow.params, RungResultRow.loss, RungResultRow.loss_rank_kind)
            .join(TrialRow, TrialRow.id == RungResultRow.trial_id)
            .where(RungResultRow.experiment_id == experiment_id, RungResultRow.rung == best)
            .order_by(RungResultRow.id)
        ).all()
        return best, [(dict(p), stored_loss(loss, kind)) for p, loss, kind in rows]

    def snapshot(self, experiment: Experiment, *, can_start: bool, n_active: int) -> SqlSnapshot:
        return SqlSnapshot(self.session, experiment, can_start=can_start, n_active=n_active)


class SqlSnapshot:
    """:class:`tuner.schedulers.base.Snapshot` over the caller's transaction.

    Order within a rung is ``(loss_rank_kind, loss, trial_number)``: the domain's
    ``(loss, trial_number)`` with non-finite losses (``inf``) last.
    """

    def __init__(
        self, session: Session, experiment: Experiment, *, can_start: bool, n_active: int
    ) -> None:
        self._session = session
        self._experiment_id = experiment.id
        self.n_trials = experiment.n_trials
        self.n_active = n_active
        self.can_start = can_start
        self.scheduler_state = experiment.scheduler_state

    def _in_rung(self, bracket: int, rung: int) -> tuple[ColumnElement[bool], ...]:
        return (
            RungResultRow.experiment_id == self._experiment_id,
            RungResultRow.bracket == bracket,
            RungResultRow.rung == rung,
        )

    def _counters(self, bracket: int, rung: int) -> RungRow | None:
        return self._session.get(
            RungRow, (self._experiment_id, bracket, rung), populate_existing=True
        )

    def _count(self, where: tuple[ColumnElement[bool], ...], limit: int) -> int:
        """``count(*)`` of at most ``limit`` matching rows (an index range, stopped early)."""
        if limit <= 0:
            return 0
        inner = select(RungResultRow.id).where(*where).limit(limit).subquery()
        return int(self._session.scalar(select(func.count()).select_from(inner)) or 0)

    def n_in_bracket(self, bracket: int) -> int:
        row = self._session.get(BracketRow, (self._experiment_id, bracket), populate_existing=True)
        return row.n_trials if row is not None else 0

    def rung_size(self, bracket: int, rung: int) -> int:
        counters = self._counters(bracket, rung)
        return counters.n_results if counters is not None else 0

    def best_unpromoted(self, bracket: int, rung: int, top: int) -> RungEntry | None:
        """The first open row c (an index seek); promotable iff rank(c) < ``top``.

        Every row ranked before c has left the rung (promoted or closed), so with L the
        number of rows that left, rank(c) = L - (left rows ranked after c). If L < top, c is
        promotable outright; otherwise count the left rows after c up to L - top + 1 (cheap
        in steady state, where few rows that left rank below the open ones). The exact rank
        of a promotable c is then counted (at most ``top`` index entries).
        """
        if top <= 0:
            return None
        first = self._session.execute(
            select(RungResultRow.loss, RungResultRow.loss_rank_kind, RungResultRow.trial_number)
            .where(*self._in_rung(bracket, rung), RungResultRow.status == RUNG_OPEN)
            .order_by(RungResultRow.loss_rank_kind, RungResultRow.loss, RungResultRow.trial_number)
            .limit(1)
        ).first()
        if first is None or first.loss_rank_kind != LOSS_FINITE:
            return None
        counters = self._counters(bracket, rung)
        n_left = counters.n_left if counters is not None else 0
        key = (first.loss_rank_kind, first.loss, first.trial_number)
        order = tuple_(RungResultRow.loss_rank_kind, RungResultRow.loss, RungResultRow.trial_number)
        if n_left >= top:
            needed = n_left - top + 1
            after = 0
            for status in (RUNG_PROMOTED, RUNG_CLOSED):  # one index range per status
                after += self._count(
                    (
                        *self._in_rung(bracket, rung),
                        RungResultRow.status == status,
                        order > tuple_(*key),
                    ),
                    needed - after,
                )
            if after < needed:
                return None
        rank = self._count((*self._in_rung(bracket, rung), order < tuple_(*key)), top)
        if rank >= top:  # cannot happen while the counters are right
            return None
        return RungEntry(first.loss, first.trial_number, rank)

    def count_better(self, bracket: int, rung: int, loss: float, limit: int) -> int:
        if math.isnan(loss):
            return 0
        where: tuple[ColumnElement[bool], ...] = (
            *self._in_rung(bracket, rung),
            RungResultRow.loss_rank_kind == LOSS_FINITE,
        )
        if math.isfinite(loss):
            where = (*where, RungResultRow.loss < loss)
        elif loss < 0:  # -inf: nothing is better
            return 0
        return self._count(where, limit)

    def rung_entries(self, bracket: int, rung: int) -> list[RungEntry]:
        rows = self._session.execute(
            select(RungResultRow.loss, RungResultRow.loss_rank_kind, RungResultRow.trial_number)
            .where(*self._in_rung(bracket, rung))
            .order_by(RungResultRow.loss_rank_kind, RungResultRow.loss, RungResultRow.trial_number)
        ).all()
        return [
            RungEntry(stored_loss(loss, kind), number, i)
            for i, (loss, kind, number) in enumerate(rows)
        ]


if TYPE_CHECKING:  # mypy proves that the classes satisfy the protocols

    def _is_store(session: Session) -> Store:
        return SqlStore(session)

    def _is_snapshot(store: SqlStore, experiment: Experiment) -> Snapshot:
        return store.snapshot(experiment, can_start=True, n_active=0)
