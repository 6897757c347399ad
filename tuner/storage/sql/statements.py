"""The SQL store's prebuilt SQLAlchemy Core statements, for both dialects (see
:mod:`tuner.storage.sql`).

Dialect-neutral reads and writes are module constants; the INSERTs that need the dialect's
``ON CONFLICT`` are built once per dialect (:func:`statements_for`). PostgreSQL's merged
writes live in :mod:`tuner.storage.sql.postgres_writes`, the snapshot's reads in
:mod:`tuner.storage.sql.snapshot`, the guards of the protocol's rules in
:mod:`tuner.storage.sql.guards`.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    Update,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from tuner.domain import JobState, TrialState
from tuner.protocol import BREAKER_COUNTS
from tuner.storage.models import RUNG_OPEN
from tuner.storage.sql import guards
from tuner.storage.sql.tables import (
    BRACKETS,
    DECISIONS,
    EXP,
    EXPERIMENT_COLUMNS,
    EXPERIMENTS,
    JOB,
    JOB_COLUMNS,
    JOBS,
    REPORT,
    REPORT_COLUMNS,
    REPORTS,
    RESULT,
    RUNG_RESULTS,
    RUNGS,
    SUPERSEDED_REPORTS,
    TRIAL,
    TRIAL_COLUMNS,
    TRIALS,
)

_ACTIVE_TRIAL_STATES = (TrialState.PENDING, TrialState.RUNNING, TrialState.LOST)
_UNFINISHED_TRIAL_STATES = tuple(s for s in TrialState if not s.is_finished())
LIVE_JOB_STATES = (JobState.QUEUED, JobState.LEASED)


def one_of(column: ColumnElement[Any], values: tuple[Any, ...]) -> ColumnElement[bool]:
    """``column IN (...)`` over constants as plain bound parameters, not one "expanding"
    parameter rendered per execution: the statement's SQL is fixed, so it can run on the
    driver's cursor (:mod:`tuner.storage.sql.executor`)."""
    return column.in_([literal(v, column.type) for v in values])


# ---- statements ----------------------------------------------------------------------------
# Built once: constructing a statement costs more Python than executing a cached one, and a
# built statement's compiled form is cached by SQLAlchemy. Bound values are named ``*_`` or
# ``v_*`` (a column's own name is reserved in INSERT and UPDATE).
TRIAL_ID: BindParameter[int] = bindparam("t_id", type_=Integer)
JOB_ID: BindParameter[int] = bindparam("j_id", type_=Integer)
EXPERIMENT_ID: BindParameter[int] = bindparam("e_id", type_=Integer)
#: ``LIMIT 1`` written into the SQL, not bound: a prepared statement's generic plan (psycopg
#: prepares a statement on its fifth run) then knows that one row is wanted, and takes the
#: index that yields it first (with ``LIMIT $1`` PostgreSQL assumes a tenth of the rows and
#: once chose a scan of every job in id order, measured: docs/PERFORMANCE.md).
LIMIT_ONE: ColumnElement[int] = literal_column("1", Integer)

GET_EXPERIMENT = select(*EXPERIMENT_COLUMNS).where(EXP.id == EXPERIMENT_ID)
LOCK_EXPERIMENT = GET_EXPERIMENT.with_for_update()
ADD_RESOURCE = (
    update(EXPERIMENTS)
    .where(EXP.id == EXPERIMENT_ID)
    .values(resource_used=EXP.resource_used + bindparam("amount_", type_=Integer))
)
# Numbering a trial locks the experiment row (PostgreSQL) until commit.
NUMBER_TRIAL = (
    update(EXPERIMENTS)
    .where(EXP.id == EXPERIMENT_ID)
    .values(
        n_trials=EXP.n_trials + 1,
        resource_used=EXP.resource_used + bindparam("amount_", type_=Integer),
    )
    .returning(EXP.n_trials)
)

GET_TRIAL = select(*TRIAL_COLUMNS).where(TRIAL.id == TRIAL_ID)
GET_TRIAL_BY_NUMBER = select(*TRIAL_COLUMNS).where(
    TRIAL.experiment_id == EXPERIMENT_ID, TRIAL.number == bindparam("number_")
)
COUNT_ACTIVE = (
    select(func.count())
    .select_from(TRIALS)
    .where(TRIAL.experiment_id == EXPERIMENT_ID, one_of(TRIAL.state, _ACTIVE_TRIAL_STATES))
)
UNFINISHED = (
    select(*TRIAL_COLUMNS)
    .where(TRIAL.experiment_id == EXPERIMENT_ID, one_of(TRIAL.state, _UNFINISHED_TRIAL_STATES))
    .order_by(TRIAL.number)
)
HAS_PARAMS = select(
    exists().where(TRIAL.experiment_id == EXPERIMENT_ID, TRIAL.params_key == bindparam("key_"))
)


@functools.lru_cache(maxsize=64)
def update_trial_statement(columns: tuple[str, ...]) -> Update:
    """``UPDATE trials SET <columns> ... RETURNING`` the trial (one per set of columns)."""
    return (
        update(TRIALS)
        .where(TRIAL.id == TRIAL_ID)
        .values({name: bindparam("v_" + name) for name in columns})
        .returning(*TRIAL_COLUMNS)
    )


GET_JOB = select(*JOB_COLUMNS).where(JOB.id == JOB_ID)


def _load_job(step: ColumnElement[int]) -> Select[Any]:
    """The job, its trial, its experiment and the trial's report at ``step``."""
    return (
        select(*JOB_COLUMNS, *TRIAL_COLUMNS, *EXPERIMENT_COLUMNS, *REPORT_COLUMNS)
        .select_from(JOBS)
        .join(TRIALS, TRIAL.id == JOB.trial_id)
        .join(EXPERIMENTS, EXP.id == JOB.experiment_id)
        .outerjoin(REPORTS, (REPORT.trial_id == JOB.trial_id) & (REPORT.step == step))
        .where(JOB.id == JOB_ID)
    )


LOAD_JOB_AT_END = _load_job(JOB.to_resource)
LOAD_JOB_AT_STEP = _load_job(bindparam("step_", type_=Integer))
NEXT_QUEUED = (
    select(*JOB_COLUMNS)
    .where(JOB.experiment_id == EXPERIMENT_ID, JOB.state == JobState.QUEUED)
    .order_by(JOB.id)
    .limit(LIMIT_ONE)
    .with_for_update(skip_locked=True)
)
LEASE_JOB = (
    update(JOBS)
    .where(JOB.id == JOB_ID, JOB.state == JobState.QUEUED)
    .values(
        state=JobState.LEASED,
        worker_id=bindparam("v_worker"),
        token_hash=bindparam("v_hash"),
        lease_expires_at=bindparam("v_until"),
    )
    .returning(*JOB_COLUMNS)
)


def renew(*, step: bool = False, plain: bool = False) -> Update:
    """The lease's compare-and-set: extend job ``j_id``'s lease to ``v_until`` where it is
    live (:func:`guards.lease_is_live`); with ``step``, only for a step the trial has not
    reported (:func:`guards.step_is_new`); with ``plain``, only where nothing is to be
    judged (:func:`guards.nothing_to_judge`)."""
    where = [JOB.id == JOB_ID, *guards.lease_is_live()]
    if step:
        where.append(guards.step_is_new())
    if plain:
        where.append(guards.nothing_to_judge())
    return update(JOBS).where(*where).values(lease_expires_at=bindparam("v_until"))


RENEW_LEASE = renew().returning(*JOB_COLUMNS)
#: A report's lease renewal (SQLite; PostgreSQL merges it, :mod:`.postgres_writes`), by
#: whether it is a plain write: its job's columns, or no row when a guard refused.
RENEW_FOR_STEP = {
    plain: renew(step=True, plain=plain).returning(*JOB_COLUMNS) for plain in (False, True)
}
END_JOB = (
    update(JOBS)
    .where(JOB.id == JOB_ID, one_of(JOB.state, LIVE_JOB_STATES))
    .values(state=bindparam("v_state"), ended_at=bindparam("v_now"))
)
#: The states of an experiment's jobs that ended as the breaker counts (the protocol's
#: BREAKER_COUNTS) since its state changed, latest first (ix_jobs_experiment_id_ended_at).
RECENT_JOB_ENDS = (
    select(JOB.state)
    .join(EXPERIMENTS, EXP.id == JOB.experiment_id)
    .where(
        JOB.experiment_id == EXPERIMENT_ID,
        one_of(JOB.state, BREAKER_COUNTS),
        JOB.ended_at >= EXP.updated_at,
    )
    .order_by(JOB.ended_at.desc())
    .limit(bindparam("limit_", type_=Integer))
)
EXPIRE_JOB = (
    update(JOBS)
    .where(JOB.id == JOB_ID, *guards.lease_has_expired())
    .values(state=JobState.EXPIRED, ended_at=bindparam("v_now"))
)
EXPIRED_JOBS = (
    select(*JOB_COLUMNS)
    .where(*guards.lease_has_expired())
    .order_by(JOB.lease_expires_at, JOB.id)
    .limit(bindparam("limit_", type_=Integer))
)
ACTIVE_JOB_OF_TRIAL = (
    select(*JOB_COLUMNS)
    .where(JOB.trial_id == TRIAL_ID, one_of(JOB.state, LIVE_JOB_STATES))
    .limit(LIMIT_ONE)
)

GET_REPORT = select(*REPORT_COLUMNS).where(
    REPORT.trial_id == TRIAL_ID, REPORT.step == bindparam("step_", type_=Integer)
)
#: A report taken out of ``reports`` (by the job that wrote it), to be kept as superseded.
TAKE_REPORT = (
    delete(REPORTS)
    .where(
        REPORT.trial_id == TRIAL_ID,
        REPORT.step == bindparam("step_", type_=Integer),
        REPORT.job_id == JOB_ID,
    )
    .returning(REPORT.value, REPORT.value_kind, REPORT.metrics, REPORT.created_at)
)
KEEP_SUPERSEDED = insert(SUPERSEDED_REPORTS)
GET_RUNG_RESULT = select(RUNG_RESULTS).where(
    RESULT.trial_id == TRIAL_ID, RESULT.rung == bindparam("rung_", type_=Integer)
)
_RESULT_OF_NUMBER = (
    RESULT.experiment_id == EXPERIMENT_ID,
    RESULT.trial_number == bindparam("number_", type_=Integer),
    RESULT.rung == bindparam("rung_", type_=Integer),
)
LEAVE_RUNG = (
    update(RUNG_RESULTS)
    .where(
        *_RESULT_OF_NUMBER,
        RESULT.bracket == bindparam("bracket_", type_=Integer),
        RESULT.status == RUNG_OPEN,
    )
    .values(status=bindparam("v_status"))
    .returning(RESULT.trial_id)
)
WHY_NOT_LEFT = select(RESULT.bracket, RESULT.status).where(*_RESULT_OF_NUMBER)
COUNT_LEFT = (
    update(RUNGS)
    .where(
        RUNGS.c.experiment_id == EXPERIMENT_ID,
        RUNGS.c.bracket == bindparam("bracket_", type_=Integer),
        RUNGS.c.rung == bindparam("rung_", type_=Integer),
    )
    .values(
        n_left=RUNGS.c.n_left + 1,
        n_promoted=RUNGS.c.n_promoted + bindparam("promoted_", type_=Integer),
    )
)
INSERT_DECISION = insert(DECISIONS)


class _DialectStatements:
    """The INSERTs that need the dialect's ``ON CONFLICT``."""

    def __init__(self, dialect: str) -> None:
        make = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.insert_once = {
            table.name: make(table).on_conflict_do_nothing().returning(table.c.id)
            for table in (TRIALS, JOBS, REPORTS, RUNG_RESULTS)
        }
        # Counters: the inserted values double as the increments (``excluded``).
        self.count_trial = self._add_to(make(BRACKETS), ("experiment_id", "bracket"))
        self.count_result = self._add_to(make(RUNGS), ("experiment_id", "bracket", "rung"))

    @staticmethod
    def _add_to(stmt: Any, keys: tuple[str, ...]) -> Any:
        table = stmt.table
        counters = [c.name for c in table.c if c.name not in keys]
        return stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: table.c[name] + stmt.excluded[name] for name in counters},
        )


@functools.lru_cache(maxsize=4)
def statements_for(dialect: str) -> _DialectStatements:
    return _DialectStatements(dialect)
