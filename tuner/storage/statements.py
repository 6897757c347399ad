"""The SQL store's prebuilt SQLAlchemy Core statements (see :mod:`tuner.storage.sql`).

Dialect-neutral reads and writes are module constants; the INSERTs that need the dialect's
``ON CONFLICT`` are built once per dialect (:func:`_statements_for`), and on PostgreSQL the
writes that take two or three statements on SQLite are merged into one each, with
data-modifying CTEs (:func:`_postgres_writes`). The snapshot's reads live in
:mod:`tuner.storage.snapshot`.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    CTE,
    BindParameter,
    Boolean,
    ColumnElement,
    Exists,
    Float,
    Integer,
    Select,
    String,
    Update,
    bindparam,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from tuner.domain import ExperimentState, JobState, TrialState
from tuner.storage.models import LOSS_FINITE, RUNG_OPEN
from tuner.storage.rows import (
    _E,
    _J,
    _R,
    _REPORT_COLUMNS,
    _T,
    BRACKETS,
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
)

_ACTIVE_TRIAL_STATES = (TrialState.PENDING, TrialState.RUNNING, TrialState.LOST)
_UNFINISHED_TRIAL_STATES = tuple(s for s in TrialState if not s.is_finished())
_LIVE_JOB_STATES = (JobState.QUEUED, JobState.LEASED)


def _one_of(column: ColumnElement[Any], values: tuple[Any, ...]) -> ColumnElement[bool]:
    """``column IN (...)`` over constants as plain bound parameters, not one "expanding"
    parameter rendered per execution: the statement's SQL is fixed, so it can run on the
    driver's cursor (:mod:`tuner.storage.direct`)."""
    return column.in_([literal(v, column.type) for v in values])


# ---- statements ----------------------------------------------------------------------------
# Built once: constructing a statement costs more Python than executing a cached one, and a
# built statement's compiled form is cached by SQLAlchemy. Bound values are named ``*_`` or
# ``v_*`` (a column's own name is reserved in INSERT and UPDATE).
_RR = RUNG_RESULTS.c
_TRIAL_ID: BindParameter[int] = bindparam("t_id", type_=Integer)
_JOB_ID: BindParameter[int] = bindparam("j_id", type_=Integer)
_EXPERIMENT_ID: BindParameter[int] = bindparam("e_id", type_=Integer)
_NOW = bindparam("now_", type_=Float)
#: ``LIMIT 1`` written into the SQL, not bound: a prepared statement's generic plan (psycopg
#: prepares a statement on its fifth run) then knows that one row is wanted, and takes the
#: index that yields it first (with ``LIMIT $1`` PostgreSQL assumes a tenth of the rows and
#: once chose a scan of every job in id order, measured: docs/PERFORMANCE.md).
ONE: ColumnElement[int] = literal_column("1", Integer)

_GET_EXPERIMENT = select(*EXPERIMENT_COLUMNS).where(_E.id == _EXPERIMENT_ID)
_LOCK_EXPERIMENT = _GET_EXPERIMENT.with_for_update()
_ADD_RESOURCE = (
    update(EXPERIMENTS)
    .where(_E.id == _EXPERIMENT_ID)
    .values(resource_used=_E.resource_used + bindparam("amount_", type_=Integer))
)
# Numbering a trial locks the experiment row (PostgreSQL) until commit.
_NUMBER_TRIAL = (
    update(EXPERIMENTS)
    .where(_E.id == _EXPERIMENT_ID)
    .values(
        n_trials=_E.n_trials + 1,
        resource_used=_E.resource_used + bindparam("amount_", type_=Integer),
    )
    .returning(_E.n_trials)
)

_GET_TRIAL = select(*TRIAL_COLUMNS).where(_T.id == _TRIAL_ID)
_GET_TRIAL_BY_NUMBER = select(*TRIAL_COLUMNS).where(
    _T.experiment_id == _EXPERIMENT_ID, _T.number == bindparam("number_")
)
_COUNT_ACTIVE = (
    select(func.count())
    .select_from(TRIALS)
    .where(_T.experiment_id == _EXPERIMENT_ID, _one_of(_T.state, _ACTIVE_TRIAL_STATES))
)
_UNFINISHED = (
    select(*TRIAL_COLUMNS)
    .where(_T.experiment_id == _EXPERIMENT_ID, _one_of(_T.state, _UNFINISHED_TRIAL_STATES))
    .order_by(_T.number)
)
_HAS_PARAMS = select(
    exists().where(_T.experiment_id == _EXPERIMENT_ID, _T.params_key == bindparam("key_"))
)


@functools.lru_cache(maxsize=64)
def _update_trial(columns: tuple[str, ...]) -> Update:
    """``UPDATE trials SET <columns> ... RETURNING`` the trial (one per set of columns)."""
    return (
        update(TRIALS)
        .where(_T.id == _TRIAL_ID)
        .values({name: bindparam("v_" + name) for name in columns})
        .returning(*TRIAL_COLUMNS)
    )


@functools.lru_cache(maxsize=128)
def _settle_trial(columns: tuple[str, ...], stop: bool) -> Update:
    """PostgreSQL: log a decision about a trial and update the trial, in one statement
    (``WITH logged AS (INSERT INTO decisions ...) UPDATE trials ... RETURNING``).

    With ``stop``, the same statement also ends the job ``s_job`` (DONE, adding ``amount_``
    to the experiment's resource_used) and closes the trial's result at ``rung_`` (the
    compare-and-set of :data:`_LEAVE_RUNG` with its counter). After the trial's columns it
    returns the closed result's trial id (NULL when it was not open), then the experiment's
    columns as that update left them (NULL when no job was ended): the experiment's row is
    locked then, and a claim that follows in the transaction need not read it again.
    """
    logged = (
        insert(DECISIONS)
        .values(
            trial_id=_TRIAL_ID,
            kind=bindparam("d_kind", type_=DECISIONS.c.kind.type),
            reason=bindparam("d_reason", type_=DECISIONS.c.reason.type),
            step=bindparam("d_step", type_=Integer),
            created_at=bindparam("d_at", type_=Float),
        )
        .cte("logged")
    )
    settled = _update_trial(columns).add_cte(logged)
    if not stop:
        return settled
    done = (  # its own bind names: v_state and v_now belong to the trial's update here
        update(JOBS)
        .where(_J.id == bindparam("s_job", type_=Integer), _one_of(_J.state, _LIVE_JOB_STATES))
        .values(state=JobState.DONE, ended_at=bindparam("d_at", type_=Float))
    )
    _, refunded = _job_ended(done, returning=True)
    left, _, counted = _rung_left()
    closed = select(left.c.trial_id).scalar_subquery().label("closed")
    experiment = [select(c).scalar_subquery().label("e_" + c.name) for c in refunded.c]
    return settled.add_cte(refunded, counted).returning(closed, *experiment)


def _job_ended(ending: Update, *, returning: bool = False) -> tuple[CTE, CTE]:
    """``ending`` (an UPDATE that ends one job) as a CTE, and the CTE that then adds
    ``amount_`` to its experiment's ``resource_used`` (with ``returning``, it returns the
    experiment's columns)."""
    ended = ending.returning(_J.experiment_id).cte("ended")
    used = (
        update(EXPERIMENTS)
        .where(_E.id == ended.c.experiment_id)
        .values(resource_used=_E.resource_used + bindparam("amount_", type_=Integer))
    )
    if returning:
        used = used.returning(*EXPERIMENT_COLUMNS)
    return ended, used.cte("refunded")


def _rung_left() -> tuple[CTE, Exists, CTE]:
    """The compare-and-set of :data:`_LEAVE_RUNG` as a CTE, whether it left, and the CTE
    that then counts it in its rung."""
    left = _LEAVE_RUNG.cte("left_rung")
    has_left = exists(select(literal(1)).select_from(left))
    return left, has_left, _COUNT_LEFT.where(has_left).cte("counted")


#: A quiet step (:func:`_record_step`): in the job's range, not reported yet, its trial
#: judged at every rung the step reaches (``rung >= floor_``), no stop asked for it or its
#: experiment.
_QUIET_STEP = (
    _J.from_resource < bindparam("r_step", type_=Integer),
    _J.to_resource >= bindparam("r_step", type_=Integer),
    ~exists().where(_R.trial_id == _J.trial_id, _R.step == bindparam("r_step", type_=Integer)),
    exists()
    .where(
        _T.id == _J.trial_id,
        _T.rung >= bindparam("floor_", type_=Integer),
        _T.stop_requested.is_(False),
        _E.id == _J.experiment_id,
        _E.state != ExperimentState.CANCELLED,
    ),
)


@functools.lru_cache(maxsize=64)
def _record_step(columns: tuple[str, ...], lock: bool = False, quiet: bool = False) -> Select[Any]:
    """PostgreSQL: a report's three writes in one statement. Renew the lease (the
    compare-and-set of :data:`_RENEW_LEASE`); if it held, insert the report (once); if that
    was new, update the trial. Answers one row: how many leases were renewed (0 or 1), then
    the updated trial's columns (NULL when nothing was updated); with ``lock``, then the
    job's experiment, locked (``FOR UPDATE``: the round trip of the lock that a judgement
    takes next). With ``quiet``, the lease is renewed (and so anything written) only for a
    report that needs no judgement nor error (:data:`_QUIET_STEP`): the whole of such a
    report, in autocommit (``api.quiet_reports``)."""
    renew = _RENEW.where(*_QUIET_STEP) if quiet else _RENEW
    renewed = renew.returning(_J.id, _J.trial_id, _J.experiment_id).cte("renewed")
    report = select(
        renewed.c.trial_id,
        renewed.c.id,
        bindparam("r_step", type_=Integer),
        bindparam("r_value", type_=Float),
        bindparam("r_kind", type_=REPORTS.c.value_kind.type),
        bindparam("r_metrics", type_=REPORTS.c.metrics.type),
        bindparam("r_at", type_=Float),
    ).select_from(renewed)
    names = ["trial_id", "job_id", "step", "value", "value_kind", "metrics", "created_at"]
    added = (
        postgresql.insert(REPORTS)
        .from_select(names, report)
        .on_conflict_do_nothing()
        .returning(_R.trial_id)
        .cte("added")
    )
    updated = (
        update(TRIALS)
        .where(_T.id == added.c.trial_id)
        .values({name: bindparam("v_" + name) for name in columns})
        .returning(*TRIAL_COLUMNS)
        .cte("updated")
    )
    n_renewed = select(func.count()).select_from(renewed).scalar_subquery()
    one = select(literal(1).label("one")).subquery("one")
    joined = one.outerjoin(updated, true())
    selected: list[Any] = [n_renewed.label("n_renewed"), *updated.c]
    if lock:
        locked = (
            select(*EXPERIMENT_COLUMNS)
            .where(_E.id.in_(select(renewed.c.experiment_id)))
            .with_for_update()
            .cte("locked")
        )
        joined = joined.outerjoin(locked, true())
        selected += list(locked.c)
    return select(*selected).select_from(joined)


_GET_JOB = select(*JOB_COLUMNS).where(_J.id == _JOB_ID)


def _load_job(step: ColumnElement[int]) -> Select[Any]:
    """The job, its trial, its experiment and the trial's report at ``step``."""
    return (
        select(*JOB_COLUMNS, *TRIAL_COLUMNS, *EXPERIMENT_COLUMNS, *_REPORT_COLUMNS)
        .select_from(JOBS)
        .join(TRIALS, _T.id == _J.trial_id)
        .join(EXPERIMENTS, _E.id == _J.experiment_id)
        .outerjoin(REPORTS, (_R.trial_id == _J.trial_id) & (_R.step == step))
        .where(_J.id == _JOB_ID)
    )


_LOAD_JOB_AT_END = _load_job(_J.to_resource)
_LOAD_JOB_AT_STEP = _load_job(bindparam("step_", type_=Integer))
_NEXT_QUEUED = (
    select(*JOB_COLUMNS)
    .where(_J.experiment_id == _EXPERIMENT_ID, _J.state == JobState.QUEUED)
    .order_by(_J.id)
    .limit(ONE)
    .with_for_update(skip_locked=True)
)
_LEASE_JOB = (
    update(JOBS)
    .where(_J.id == _JOB_ID, _J.state == JobState.QUEUED)
    .values(
        state=JobState.LEASED,
        worker_id=bindparam("v_worker"),
        token_hash=bindparam("v_hash"),
        lease_expires_at=bindparam("v_until"),
    )
    .returning(*JOB_COLUMNS)
)
_RENEW = (
    update(JOBS)
    .where(
        _J.id == _JOB_ID,
        _J.state == JobState.LEASED,
        _J.token_hash == bindparam("hash_", type_=String),
        _J.lease_expires_at.is_not(None),
        _J.lease_expires_at >= _NOW,
    )
    .values(lease_expires_at=bindparam("v_until"))
)
_RENEW_LEASE = _RENEW.returning(*JOB_COLUMNS)
_END_JOB = (
    update(JOBS)
    .where(_J.id == _JOB_ID, _one_of(_J.state, _LIVE_JOB_STATES))
    .values(state=bindparam("v_state"), ended_at=bindparam("v_now"))
)
_EXPIRE_JOB = (
    update(JOBS)
    .where(_J.id == _JOB_ID, _J.state == JobState.LEASED, _J.lease_expires_at < _NOW)
    .values(state=JobState.EXPIRED, ended_at=bindparam("v_now"))
)
_EXPIRED_JOBS = (
    select(*JOB_COLUMNS)
    .where(_J.state == JobState.LEASED, _J.lease_expires_at < _NOW)
    .order_by(_J.lease_expires_at, _J.id)
    .limit(bindparam("limit_", type_=Integer))
)
_ACTIVE_JOB_OF_TRIAL = (
    select(*JOB_COLUMNS)
    .where(_J.trial_id == _TRIAL_ID, _one_of(_J.state, _LIVE_JOB_STATES))
    .limit(ONE)
)

_GET_REPORT = select(*_REPORT_COLUMNS).where(
    _R.trial_id == _TRIAL_ID, _R.step == bindparam("step_", type_=Integer)
)
_GET_RUNG_RESULT = select(RUNG_RESULTS).where(
    _RR.trial_id == _TRIAL_ID, _RR.rung == bindparam("rung_", type_=Integer)
)
_RESULT_OF_NUMBER = (
    _RR.experiment_id == _EXPERIMENT_ID,
    _RR.trial_number == bindparam("number_", type_=Integer),
    _RR.rung == bindparam("rung_", type_=Integer),
)
_LEAVE_RUNG = (
    update(RUNG_RESULTS)
    .where(
        *_RESULT_OF_NUMBER,
        _RR.bracket == bindparam("bracket_", type_=Integer),
        _RR.status == RUNG_OPEN,
    )
    .values(status=bindparam("v_status"))
    .returning(_RR.trial_id)
)
_WHY_NOT_LEFT = select(_RR.bracket, _RR.status).where(*_RESULT_OF_NUMBER)
_COUNT_LEFT = (
    update(RUNGS)
    .where(
        RUNGS.c.experiment_id == _EXPERIMENT_ID,
        RUNGS.c.bracket == bindparam("bracket_", type_=Integer),
        RUNGS.c.rung == bindparam("rung_", type_=Integer),
    )
    .values(
        n_left=RUNGS.c.n_left + 1,
        n_promoted=RUNGS.c.n_promoted + bindparam("promoted_", type_=Integer),
    )
)
_INSERT_DECISION = insert(DECISIONS)


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


class _PostgresWrites:
    """Writes of two or three statements merged into one for PostgreSQL, with
    data-modifying CTEs (SQLite has none, and runs them one by one at no round-trip cost).
    Each sub-statement sees the snapshot the statement started with; they see each other's
    rows only through RETURNING, which is all they use."""

    def __init__(self) -> None:
        e_id, bracket = _EXPERIMENT_ID, bindparam("v_bracket", type_=Integer)
        # create_trial: number it, insert it, count it in its bracket -> (number, id or NULL
        # on a conflict); no row: no such experiment, or (with ``unseen_``) an experiment
        # that has a trial with these params already.
        seen = exists().where(
            _T.experiment_id == e_id,
            _T.params_key == bindparam("v_params_key", type_=_T.params_key.type),
        )
        numbered = (
            update(EXPERIMENTS)
            .where(_E.id == e_id, or_(~bindparam("unseen_", type_=Boolean), ~seen))
            .values(
                n_trials=_E.n_trials + 1,
                resource_used=_E.resource_used + bindparam("amount_", type_=Integer),
            )
            .returning((_E.n_trials - 1).label("number"))
            .cte("numbered")
        )
        now = bindparam("v_now", type_=Float)
        new_trial = select(
            e_id,
            numbered.c.number,
            bracket,
            bindparam("v_params", type_=_T.params.type),
            bindparam("v_params_key", type_=_T.params_key.type),
            bindparam("v_state", type_=_T.state.type),
            literal(-1),
            literal(0),
            literal(0),
            literal(0),
            literal(False),
            now,
            now,
        ).select_from(numbered)
        columns = ["experiment_id", "number", "bracket", "params", "params_key", "state"]
        columns += ["rung", "resource", "checkpoint_step", "retries", "stop_requested"]
        inserted = (
            postgresql.insert(TRIALS)
            .from_select([*columns, "created_at", "updated_at"], new_trial)
            .on_conflict_do_nothing()
            .returning(_T.id)
            .cte("inserted")
        )
        in_bracket = postgresql.insert(BRACKETS).from_select(
            ["experiment_id", "bracket", "n_trials"],
            select(e_id, bracket, literal(1)).select_from(inserted),
        )
        in_bracket = in_bracket.on_conflict_do_update(
            index_elements=["experiment_id", "bracket"],
            set_={"n_trials": BRACKETS.c.n_trials + in_bracket.excluded.n_trials},
        )
        self.create_trial = (
            select(numbered.c.number, inserted.c.id)
            .select_from(numbered.outerjoin(inserted, true()))
            .add_cte(in_bracket.cte("in_bracket"))
        )
        # start_trial: create_trial, then log why it started and insert its leased job ->
        # (number, trial id or NULL on a conflict, job id).
        logged = postgresql.insert(DECISIONS).from_select(
            ["trial_id", "kind", "reason", "step", "created_at"],
            select(
                inserted.c.id,
                bindparam("d_kind", type_=DECISIONS.c.kind.type),
                bindparam("d_reason", type_=DECISIONS.c.reason.type),
                null(),
                now,
            ).select_from(inserted),
        )
        job_columns = ["experiment_id", "trial_id", "trial_number", "bracket", "rung"]
        job_columns += ["from_resource", "to_resource", "state", "attempt", "worker_id"]
        job_columns += ["lease_expires_at", "created_at", "token_hash"]
        job = (
            postgresql.insert(JOBS)
            .from_select(
                job_columns,
                select(
                    e_id,
                    inserted.c.id,
                    numbered.c.number,
                    bracket,
                    bindparam("j_rung", type_=Integer),
                    literal(0),
                    bindparam("j_resource", type_=Integer),
                    literal(JobState.LEASED, type_=JOBS.c.state.type),
                    literal(0),
                    bindparam("j_worker", type_=String),
                    bindparam("j_until", type_=Float),
                    now,
                    bindparam("j_hash", type_=String),
                ).select_from(inserted.join(numbered, true())),
            )
            .returning(_J.id)
            .cte("job")
        )
        self.start_trial = (
            select(numbered.c.number, inserted.c.id, job.c.id.label("job_id"))
            .select_from(numbered.outerjoin(inserted, true()).outerjoin(job, true()))
            .add_cte(in_bracket.cte("in_bracket"), logged.cte("logged"))
        )

        # add_rung_result: insert it and, if it was new, count it -> id; no row: conflict.
        # add_rung_result_ranked: the same with the stopping test's rank (see _rung_insert).
        self.add_rung_result, self.add_rung_result_ranked = _rung_insert(None)
        # add_rung_result_ahead: add_rung_result_ranked, only if the report that the same
        # transaction's statement before stored is still to be judged at this rung (see
        # _RUNG_AHEAD) -> no row when not.
        self.add_rung_result_ahead = _rung_insert(_RUNG_AHEAD)[1]

        # end_job with a change of the experiment's resource_used -> 1 if the job ended.
        ended, used_now = _job_ended(_END_JOB)
        self.end_job = select(func.count()).select_from(ended).add_cte(used_now)

        # _leave: open -> promoted or closed, and count it -> trial id; no row: see why.
        left, has_left, counted = _rung_left()
        self.leave = select(left.c.trial_id).add_cte(counted)

        # promote: _leave, then the trial runs and the experiment counts its resource ->
        # the trial; no row: see why.
        used = (
            update(EXPERIMENTS)
            .where(_E.id == e_id, has_left)
            .values(resource_used=_E.resource_used + bindparam("amount_", type_=Integer))
            .cte("used")
        )
        running = (
            update(TRIALS)
            .where(_T.id == left.c.trial_id)
            .values(state=bindparam("v_state"), updated_at=bindparam("v_now"))
            .returning(*TRIAL_COLUMNS)
            .cte("running")
        )
        self.promote = select(running).add_cte(counted, used)


#: The condition of a rung result written ahead (``SqlStore.record_step``'s ``rung_ahead``):
#: the report at ``g_step`` was stored by job ``g_job`` at the result's own time (so by the
#: statement just before, in this transaction), the trial runs with no stop asked, its
#: experiment is not cancelled, and the trial's next rung to be judged at is this one
#: (``tuner.coordinator.report._passed_rungs``: the rung after its last, or the bracket's
#: bottom ``g_bottom``).
_AHEAD_RUNG = bindparam("v_rung", type_=Integer)
_RUNG_AHEAD = exists().where(
    _R.trial_id == bindparam("v_trial_id", type_=Integer),
    _R.step == bindparam("g_step", type_=Integer),
    _R.job_id == bindparam("g_job", type_=Integer),
    _R.created_at == bindparam("v_created_at", type_=Float),
    _T.id == _R.trial_id,
    _T.state == literal(TrialState.RUNNING, _T.state.type),
    _T.stop_requested.is_(False),
    _T.rung < _AHEAD_RUNG,
    or_(_T.rung == _AHEAD_RUNG - 1, bindparam("g_bottom", type_=Integer) == _AHEAD_RUNG),
    _E.id == _T.experiment_id,
    _E.state != literal(ExperimentState.CANCELLED, _E.state.type),
)


def _rung_insert(guard: Exists | None) -> tuple[Select[Any], Select[Any]]:
    """A rung result's insert (``v_*``: its columns) that, if it was new, counts it in its
    rung -> (id, n_results); and the same with the stopping test's rank -> (id, n_results,
    n_better): how many finite results of the rung are better than this finite one,
    counted up to max(n // eta_, 1) index entries (the statement's snapshot does not hold
    the new row; it is not better than itself). With ``guard``, nothing is inserted unless
    it holds. No row: nothing inserted (a conflict, or the guard)."""
    e_id, bracket = _EXPERIMENT_ID, bindparam("v_bracket", type_=Integer)
    names = [c.name for c in RUNG_RESULTS.c if c.name != "id"]
    insert_ = postgresql.insert(RUNG_RESULTS)
    if guard is None:
        insert_ = insert_.values({name: bindparam("v_" + name) for name in names})
    else:
        row = select(*(bindparam("v_" + n, type_=RUNG_RESULTS.c[n].type) for n in names))
        insert_ = insert_.from_select(names, row.where(guard))
    added = insert_.on_conflict_do_nothing().returning(_RR.id).cte("added")
    in_rung = postgresql.insert(RUNGS).from_select(
        ["experiment_id", "bracket", "rung", "n_results", "n_left", "n_promoted"],
        select(
            e_id,
            bracket,
            bindparam("v_rung", type_=Integer),
            literal(1),
            bindparam("left_", type_=Integer),
            bindparam("promoted_", type_=Integer),
        ).select_from(added),
    )
    in_rung = in_rung.on_conflict_do_update(
        index_elements=["experiment_id", "bracket", "rung"],
        set_={n: RUNGS.c[n] + in_rung.excluded[n] for n in ("n_results", "n_left", "n_promoted")},
    )
    in_rung_cte = in_rung.returning(RUNGS.c.n_results).cte("in_rung")
    plain = select(added.c.id, in_rung_cte.c.n_results).select_from(
        added.join(in_rung_cte, true())
    )
    cap = select(func.greatest(in_rung_cte.c.n_results // bindparam("eta_", Integer), 1))
    better = (  # columns of ix_rung_results_order only: an index-only scan where it can
        select(_RR.trial_number)
        .where(
            _RR.experiment_id == e_id,
            _RR.bracket == bracket,
            _RR.rung == bindparam("v_rung", type_=Integer),
            _RR.loss_rank_kind == LOSS_FINITE,
            _RR.loss < bindparam("v_loss", type_=Float),
        )
        .limit(cap.scalar_subquery())
        .subquery("better")
    )
    n_better = select(func.count()).select_from(better).scalar_subquery()
    ranked = select(added.c.id, in_rung_cte.c.n_results, n_better.label("n_better")).select_from(
        added.join(in_rung_cte, true())
    )
    return plain, ranked


@functools.lru_cache(maxsize=4)
def _statements_for(dialect: str) -> _DialectStatements:
    return _DialectStatements(dialect)


@functools.lru_cache(maxsize=1)
def _postgres_writes() -> _PostgresWrites:
    return _PostgresWrites()
