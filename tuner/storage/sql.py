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

On PostgreSQL the writes that take two or three statements on SQLite (a new trial with its
bracket counter, a rung result with its rung counter, a promotion) are one statement each,
with data-modifying CTEs.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Integer,
    Result,
    Select,
    String,
    Table,
    Text,
    Update,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
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
    RungEntry,
    RungResult,
    Trial,
    TrialState,
    ValueKind,
)
from tuner.errors import ConflictError, NotFound
from tuner.store import JobContext, Lease

if TYPE_CHECKING:
    from tuner.schedulers.base import Snapshot
    from tuner.store import Store

from tuner.storage.models import (
    LOSS_FINITE,
    LOSS_NON_FINITE,
    RUNG_CLOSED,
    RUNG_OPEN,
    RUNG_PROMOTED,
    Base,
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

#: How many parsed experiment documents :func:`_parse_config` keeps.
CONFIG_CACHE_SIZE = 256

_tables = Base.metadata.tables
EXPERIMENTS: Table = _tables["experiments"]
TRIALS: Table = _tables["trials"]
JOBS: Table = _tables["jobs"]
REPORTS: Table = _tables["reports"]
RUNG_RESULTS: Table = _tables["rung_results"]
RUNGS: Table = _tables["rungs"]
BRACKETS: Table = _tables["brackets"]
DECISIONS: Table = _tables["decisions"]

# Column lists of the hot reads, in the order the converters below unpack them (the large
# ``trials.output_tail`` and the ``params_key`` are never read here). The experiment's
# document is read as its stored JSON text: the key of the parsed-document cache.
_E, _T, _J, _R = EXPERIMENTS.c, TRIALS.c, JOBS.c, REPORTS.c
EXPERIMENT_COLUMNS = (
    _E.id,
    _E.name,
    cast(_E.config, Text).label("config_text"),
    _E.state,
    _E.scheduler_state,
    _E.n_trials,
    _E.resource_used,
    _E.created_at,
    _E.ended_at,
)
TRIAL_COLUMNS = (
    _T.id,
    _T.experiment_id,
    _T.number,
    _T.bracket,
    _T.params,
    _T.state,
    _T.rung,
    _T.resource,
    _T.checkpoint,
    _T.checkpoint_step,
    _T.best_loss,
    _T.best_loss_kind,
    _T.last_value,
    _T.last_value_kind,
    _T.retries,
    _T.stop_requested,
    _T.created_at,
    _T.updated_at,
    _T.ended_at,
)
JOB_COLUMNS = (
    _J.id,
    _J.experiment_id,
    _J.trial_id,
    _J.trial_number,
    _J.bracket,
    _J.rung,
    _J.from_resource,
    _J.to_resource,
    _J.checkpoint,
    _J.state,
    _J.attempt,
    _J.worker_id,
    _J.lease_expires_at,
    _J.created_at,
    _J.token_hash,
)
_REPORT_COLUMNS = (_R.job_id, _R.step, _R.value, _R.value_kind, _R.metrics, _R.created_at)
_NE, _NT, _NJ = len(EXPERIMENT_COLUMNS), len(TRIAL_COLUMNS), len(JOB_COLUMNS)


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
    if kind == "finite" and value is not None:
        return float(value)
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


@functools.lru_cache(maxsize=CONFIG_CACHE_SIZE)
def _parse_config(text: str) -> Any:
    """The ``ExperimentConfig`` stored as ``text`` (a frozen model, so safe to share)."""
    return config_from_json(json.loads(text))


def _config_text(value: Any) -> str:
    """The stored document as text (drivers hand JSON columns back as text or parsed)."""
    return value if isinstance(value, str) else json.dumps(value)


def _experiment_of(v: Sequence[Any]) -> Experiment:
    """From the values of :data:`EXPERIMENT_COLUMNS`."""
    return Experiment(
        id=v[0],
        name=v[1],
        config=_parse_config(_config_text(v[2])),
        state=ExperimentState(v[3]),
        scheduler_state=dict(v[4]),
        n_trials=v[5],
        resource_used=v[6],
        created_at=v[7],
        ended_at=v[8],
    )


def _trial_of(v: Sequence[Any]) -> Trial:
    """From the values of :data:`TRIAL_COLUMNS`."""
    return Trial(
        id=v[0],
        experiment_id=v[1],
        number=v[2],
        bracket=v[3],
        params=dict(v[4]),
        state=TrialState(v[5]),
        rung=v[6],
        resource=v[7],
        checkpoint=v[8],
        checkpoint_step=v[9],
        best_loss=join_value(v[10], v[11]),
        last_value=join_value(v[12], v[13]),
        retries=v[14],
        stop_requested=bool(v[15]),
        created_at=v[16],
        updated_at=v[17],
        ended_at=v[18],
    )


def _job_of(v: Sequence[Any]) -> Job:
    """From the values of :data:`JOB_COLUMNS`."""
    return Job(
        id=v[0],
        experiment_id=v[1],
        trial_id=v[2],
        trial_number=v[3],
        bracket=v[4],
        rung=v[5],
        from_resource=v[6],
        to_resource=v[7],
        checkpoint=v[8],
        state=JobState(v[9]),
        attempt=v[10],
        worker_id=v[11],
        lease_expires_at=v[12],
        created_at=v[13],
        token_hash=v[14],
    )


def _trial(row: Any) -> Trial:
    """From a row with the trial's columns as attributes (ORM row or named Core row)."""
    return _trial_of([getattr(row, c.name) for c in TRIAL_COLUMNS])


def _job(row: Any) -> Job:
    """From a row with the job's columns as attributes (ORM row or named Core row)."""
    return _job_of([getattr(row, c.name) for c in JOB_COLUMNS])


def _report_value(value: float | None, kind: Any) -> float:
    joined = join_value(value, kind)
    return math.nan if joined is None else joined


def _rung_result(row: Any) -> RungResult:
    return RungResult(
        bracket=row.bracket,
        rung=row.rung,
        trial_number=row.trial_number,
        trial_id=row.trial_id,
        loss=stored_loss(row.loss, row.loss_rank_kind),
        value=_report_value(row.value, row.value_kind),
        promoted=row.status == RUNG_PROMOTED,
        closed=row.status == RUNG_CLOSED,
        created_at=row.created_at,
    )


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is not None:
        return bool(sqlstate == "23503")
    return "FOREIGN KEY constraint failed" in str(orig)


# ---- statements ----------------------------------------------------------------------------
# Built once: constructing a statement costs more Python than executing a cached one, and a
# built statement's compiled form is cached by SQLAlchemy. Bound values are named ``*_`` or
# ``v_*`` (a column's own name is reserved in INSERT and UPDATE).
_RR = RUNG_RESULTS.c
_TRIAL_ID: BindParameter[int] = bindparam("t_id", type_=Integer)
_JOB_ID: BindParameter[int] = bindparam("j_id", type_=Integer)
_EXPERIMENT_ID: BindParameter[int] = bindparam("e_id", type_=Integer)
_NOW = bindparam("now_", type_=Float)

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
    .where(_T.experiment_id == _EXPERIMENT_ID, _T.state.in_(_ACTIVE_TRIAL_STATES))
)
_UNFINISHED = (
    select(*TRIAL_COLUMNS)
    .where(_T.experiment_id == _EXPERIMENT_ID, _T.state.in_(_UNFINISHED_TRIAL_STATES))
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
    .limit(1)
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
_RENEW_LEASE = (
    update(JOBS)
    .where(
        _J.id == _JOB_ID,
        _J.state == JobState.LEASED,
        _J.token_hash == bindparam("hash_", type_=String),
        _J.lease_expires_at.is_not(None),
        _J.lease_expires_at >= _NOW,
    )
    .values(lease_expires_at=bindparam("v_until"))
    .returning(*JOB_COLUMNS)
)
_END_JOB = (
    update(JOBS)
    .where(_J.id == _JOB_ID, _J.state.in_(_LIVE_JOB_STATES))
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
    select(*JOB_COLUMNS).where(_J.trial_id == _TRIAL_ID, _J.state.in_(_LIVE_JOB_STATES)).limit(1)
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

# The snapshot's reads: one rung of one bracket, in rank order.
_BRACKET, _RUNG = bindparam("bracket_", type_=Integer), bindparam("rung_", type_=Integer)


def _in_rung(table: Any) -> tuple[ColumnElement[bool], ...]:
    """Rows of ``table`` (``rung_results`` or an alias) in the asked rung of the bracket."""
    return (
        table.c.experiment_id == _EXPERIMENT_ID,
        table.c.bracket == _BRACKET,
        table.c.rung == _RUNG,
    )


def _rank_order(table: Any) -> tuple[ColumnElement[Any], ...]:
    return (table.c.loss_rank_kind, table.c.loss, table.c.trial_number)


def _counted(table: Any, limit: BindParameter[int], *where: ColumnElement[bool]) -> Any:
    """``count(*)`` of at most ``limit`` rows of ``table`` (an index range, stopped early)."""
    inner = select(table.c.id).where(*where).limit(limit).subquery()
    return select(func.count()).select_from(inner)


def _counter_rows() -> tuple[Select[Any], Select[Any]]:
    """Every rung counter (rung >= 0) of the experiment with the rung's first open row (its
    rank key; an index seek per rung), and every bracket counter (rung -1): few rows."""
    open_row = RUNG_RESULTS.alias("open_row")
    first_open = (
        select(open_row.c.id)
        .where(
            open_row.c.experiment_id == RUNGS.c.experiment_id,
            open_row.c.bracket == RUNGS.c.bracket,
            open_row.c.rung == RUNGS.c.rung,
            open_row.c.status == RUNG_OPEN,
        )
        .order_by(*_rank_order(open_row))
        .limit(1)
        .correlate(RUNGS)
        .scalar_subquery()
    )
    head = RUNG_RESULTS.alias("head")
    rungs = (
        select(RUNGS.c.bracket, RUNGS.c.rung, RUNGS.c.n_results, RUNGS.c.n_left, *_rank_order(head))
        .select_from(RUNGS.outerjoin(head, head.c.id == first_open))
        .where(RUNGS.c.experiment_id == _EXPERIMENT_ID)
    )
    none = (null(), null(), null())
    brackets = select(
        BRACKETS.c.bracket, literal(-1), BRACKETS.c.n_trials, literal(0), *none
    ).where(BRACKETS.c.experiment_id == _EXPERIMENT_ID)
    return rungs, brackets


_COUNTER_ROWS = _counter_rows()
_COUNTERS = union_all(*_COUNTER_ROWS)
# The same plus the oldest queued job's id (rung -2), if any: a claim's first read.
_oldest_queued = (
    select(_J.id)
    .where(_J.experiment_id == _EXPERIMENT_ID, _J.state == JobState.QUEUED)
    .order_by(_J.id)
    .limit(1)
    .subquery("oldest_queued")
)
_COUNTERS_AND_QUEUED = union_all(
    *_COUNTER_ROWS,
    select(
        literal(-1), literal(-2), _oldest_queued.c.id, literal(0), null(), null(), null()
    ).select_from(_oldest_queued),
)

#: (loss_rank_kind, loss, trial_number) of a rung's first open row, or None.
Head = tuple[int, float, int] | None
#: (bracket, rung) -> (results, left, first open row), and bracket -> trials.
Counters = tuple[dict[tuple[int, int], tuple[int, int, Head]], dict[int, int]]


def _counters_of(rows: Result[Any]) -> tuple[Counters, int | None]:
    """Parse :data:`_COUNTERS` or :data:`_COUNTERS_AND_QUEUED`: the counters, a job id."""
    rungs: dict[tuple[int, int], tuple[int, int, Head]] = {}
    brackets: dict[int, int] = {}
    queued = None
    for bracket, rung, n, n_left, kind, loss, number in map(tuple, rows):
        if rung >= 0:
            rungs[(bracket, rung)] = (n, n_left, None if kind is None else (kind, loss, number))
        elif rung == -1:
            brackets[bracket] = n
        else:
            queued = n
    return (rungs, brackets), queued


_RUNG_ENTRIES = (
    select(*_rank_order(RUNG_RESULTS))
    .where(*_in_rung(RUNG_RESULTS))
    .order_by(*_rank_order(RUNG_RESULTS))
)
_LIMIT = bindparam("limit_", type_=Integer)
_COUNT_FINITE = _counted(
    RUNG_RESULTS, _LIMIT, *_in_rung(RUNG_RESULTS), _RR.loss_rank_kind == LOSS_FINITE
)
_COUNT_FINITE_BELOW = _counted(
    RUNG_RESULTS,
    _LIMIT,
    *_in_rung(RUNG_RESULTS),
    _RR.loss_rank_kind == LOSS_FINITE,
    _RR.loss < bindparam("loss_", type_=Float),
)


def _rank_if_promotable() -> tuple[Select[Any], Select[Any]]:
    """For :meth:`SqlSnapshot.best_unpromoted`, given the first open row ``k_*``: its rank
    (up to ``top_``), and the same behind a test that it is promotable at all.

    Promotable: at least ``needed_`` rows that left the rung rank after the key (counted per
    status, each up to ``needed_``). The rows before the key are finite, and are spelled
    with a plain ``loss <=`` bound: a btree scan on a row comparison ``(a, b, c) < (...)``
    ends only when its first column passes the bound (PostgreSQL < 18), which on
    ``loss_rank_kind`` is every finite row of the rung. CASE evaluates the rank's count only
    when the row is promotable. Both are kept simple (plain bound values, no correlation):
    PostgreSQL re-plans statements like these on every execution, and planning a complex
    one costs more than running it.
    """
    key_loss, key_number = bindparam("k_loss", type_=Float), bindparam("k_number", type_=Integer)
    key = (bindparam("k_kind", type_=Integer), key_loss, key_number)
    needed = bindparam("needed_", type_=Integer)
    rank = _counted(
        RUNG_RESULTS,
        bindparam("top_", type_=Integer),
        *_in_rung(RUNG_RESULTS),
        _RR.loss_rank_kind == LOSS_FINITE,
        _RR.loss <= key_loss,
        tuple_(_RR.loss, _RR.trial_number) < tuple_(key_loss, key_number),
    )

    def left_after(status: int) -> Any:
        after = tuple_(*_rank_order(RUNG_RESULTS)) > tuple_(*key)
        where = (*_in_rung(RUNG_RESULTS), _RR.status == status, after)
        return _counted(RUNG_RESULTS, needed, *where).scalar_subquery()

    promotable = left_after(RUNG_PROMOTED) + left_after(RUNG_CLOSED) >= needed
    return rank, select(case((promotable, rank.scalar_subquery()), else_=None))


_RANK, _RANK_IF_PROMOTABLE = _rank_if_promotable()


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
        # on a conflict); no row: no such experiment.
        numbered = (
            update(EXPERIMENTS)
            .where(_E.id == e_id)
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

        # add_rung_result: insert it and, if it was new, count it -> id; no row: conflict.
        names = [c.name for c in RUNG_RESULTS.c if c.name != "id"]
        added = (
            postgresql.insert(RUNG_RESULTS)
            .values({name: bindparam("v_" + name) for name in names})
            .on_conflict_do_nothing()
            .returning(_RR.id)
            .cte("added")
        )
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
            set_={
                n: RUNGS.c[n] + in_rung.excluded[n] for n in ("n_results", "n_left", "n_promoted")
            },
        )
        self.add_rung_result = select(added.c.id).add_cte(in_rung.cte("in_rung"))

        # _leave: open -> promoted or closed, and count it -> trial id; no row: see why.
        left = _LEAVE_RUNG.cte("left_rung")
        has_left = exists(select(literal(1)).select_from(left))
        counted = _COUNT_LEFT.where(has_left).cte("counted")
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


@functools.lru_cache(maxsize=4)
def _statements_for(dialect: str) -> _DialectStatements:
    return _DialectStatements(dialect)


@functools.lru_cache(maxsize=1)
def _postgres_writes() -> _PostgresWrites:
    return _PostgresWrites()


class SqlStore:
    """A :class:`tuner.store.Store` over one SQLAlchemy session (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._dialect = session.get_bind().dialect.name
        self._sql = _statements_for(self._dialect)
        # Jobs as this transaction last read or wrote them: see known_job.
        self._jobs: dict[int, Job] = {}
        # Counters read by next_queued_job, for the next snapshot: see there.
        self._prefetched: dict[int, Counters] = {}

    # ---- helpers -----------------------------------------------------------------------
    @property
    def is_postgres(self) -> bool:
        return self._dialect == "postgresql"

    def _run(self, stmt: Executable, params: dict[str, Any]) -> Result[Any]:
        return self.session.execute(stmt, params)

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
        result = self.session.execute(
            update(EXPERIMENTS).where(_E.id == experiment_id).values(**values)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"experiment {experiment_id} does not exist")

    def _counters_changed(self, experiment_id: int) -> None:
        self._prefetched.pop(experiment_id, None)

    def _seen(self, job: Job) -> Job:
        self._jobs[job.id] = job
        return job

    # ---- experiments -------------------------------------------------------------------
    def create_experiment(self, config: Any, now: float) -> Experiment:
        new_id = self.session.execute(
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
            .returning(_E.id)
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
        stmt = _LOCK_EXPERIMENT if lock else _GET_EXPERIMENT
        row = self._run(stmt, {"e_id": experiment_id}).first()
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        return _experiment_of(row)

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
            number, new_id = self._create_trial_merged(
                experiment_id, bracket, params, params_key, now, state, add_resource_used
            )
        else:
            number, new_id = self._create_trial_steps(
                experiment_id, bracket, params, params_key, now, state, add_resource_used
            )
        return Trial(
            id=new_id,
            experiment_id=experiment_id,
            number=number,
            bracket=bracket,
            params=params,
            state=state,
            rung=-1,
            resource=0,
            checkpoint=None,
            checkpoint_step=0,
            best_loss=None,
            last_value=None,
            retries=0,
            stop_requested=False,
            created_at=now,
            updated_at=now,
        )

    def _create_trial_merged(
        self,
        experiment_id: int,
        bracket: int,
        params: dict[str, Any],
        params_key: str,
        now: float,
        state: TrialState,
        add_resource_used: int,
    ) -> tuple[int, int]:
        row = self._run(
            _postgres_writes().create_trial,
            {
                "e_id": experiment_id,
                "amount_": add_resource_used,
                "v_bracket": bracket,
                "v_params": params,
                "v_params_key": params_key,
                "v_state": state,
                "v_now": now,
            },
        ).first()
        if row is None:
            raise NotFound(f"experiment {experiment_id} does not exist")
        if row.id is None:
            raise ConflictError(f"experiment {experiment_id} already has trial {row.number}")
        return int(row.number), int(row.id)

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
        unknown = set(changes) - _TRIAL_FIELDS
        if unknown:
            raise TypeError(f"update_trial: unknown trial fields {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "best_loss":
                values["best_loss"], values["best_loss_kind"] = split_value(value)
            elif name == "last_value":
                values["last_value"], values["last_value_kind"] = split_value(value)
            elif name == "state":
                values["state"] = TrialState(value)
            else:
                values[name] = value
        values["updated_at"] = now
        stmt = _update_trial(tuple(sorted(values)))
        params = {"v_" + name: value for name, value in values.items()}
        row = self._run(stmt, {**params, "t_id": trial_id}).first()
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
        counters, queued = _counters_of(self._run(_COUNTERS_AND_QUEUED, {"e_id": experiment_id}))
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

    def end_job(self, job_id: int, state: JobState, now: float) -> bool:
        result = self._run(_END_JOB, {"j_id": job_id, "v_state": state, "v_now": now})
        if result.rowcount == 1:  # type: ignore[attr-defined]
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

    # ---- rungs -------------------------------------------------------------------------
    def add_rung_result(self, experiment_id: int, result: RungResult) -> None:
        loss, rank_kind = loss_columns(result.loss)
        value, kind = split_value(result.value)
        status = RUNG_PROMOTED if result.promoted else RUNG_CLOSED if result.closed else RUNG_OPEN
        row = {
            "experiment_id": experiment_id,
            "bracket": result.bracket,
            "rung": result.rung,
            "trial_number": result.trial_number,
            "trial_id": result.trial_id,
            "loss": loss,
            "loss_rank_kind": rank_kind,
            "value": value,
            "value_kind": kind,
            "status": status,
            "created_at": result.created_at,
        }
        conflict = f"trial {result.trial_number} already has a result at rung {result.rung}"
        missing = f"trial {result.trial_id} does not exist"
        left, promoted = int(status != RUNG_OPEN), int(status == RUNG_PROMOTED)
        self._counters_changed(experiment_id)
        if self.is_postgres:  # insert and count in one statement
            params = {"v_" + name: value for name, value in row.items()}
            params.update(e_id=experiment_id, left_=left, promoted_=promoted)
            try:
                added = self._run(_postgres_writes().add_rung_result, params).scalar()
            except IntegrityError as exc:
                if _is_foreign_key_violation(exc):
                    raise NotFound(missing) from None
                raise
            if added is None:
                raise ConflictError(conflict)
            return
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
        params = {
            "e_id": experiment_id,
            "number_": trial_number,
            "rung_": rung,
            "bracket_": bracket,
            "v_status": RUNG_PROMOTED,
            "promoted_": 1,
            "amount_": add_resource_used,
            "v_state": TrialState.RUNNING,
            "v_now": now,
        }
        row = self._run(_postgres_writes().promote, params).first()
        if row is None:  # not open: _leave says why (NotFound or ConflictError)
            self._leave(experiment_id, bracket, rung, trial_number, promoted=True)
            raise ConflictError(f"trial {trial_number} left rung {rung} concurrently")
        return _trial_of(row)

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

    # ---- what schedulers and samplers read ----------------------------------------------
    def has_params(self, experiment_id: int, params_key: str) -> bool:
        return bool(self._run(_HAS_PARAMS, {"e_id": experiment_id, "key_": params_key}).scalar())

    def results_at_highest_level(
        self, experiment_id: int, min_count: int
    ) -> tuple[int, list[tuple[dict[str, Any], float]]] | None:
        total = func.sum(RUNGS.c.n_results)
        best = self.session.execute(
            select(RUNGS.c.rung)
            .where(RUNGS.c.experiment_id == experiment_id)
            .group_by(RUNGS.c.rung)
            .having(total >= min_count, total > 0)
            .order_by(RUNGS.c.rung.desc())
            .limit(1)
        ).scalar()
        if best is None:
            return None
        rows = self.session.execute(
            select(_T.params, _RR.loss, _RR.loss_rank_kind)
            .select_from(RUNG_RESULTS)
            .join(TRIALS, _T.id == _RR.trial_id)
            .where(_RR.experiment_id == experiment_id, _RR.rung == best)
            .order_by(_RR.id)
        ).all()
        return best, [(dict(p), stored_loss(loss, kind)) for p, loss, kind in rows]

    def snapshot(
        self, experiment: Experiment, *, can_start: bool, n_active: int | None = None
    ) -> SqlSnapshot:
        counters = self._prefetched.pop(experiment.id, None)
        return SqlSnapshot(
            self, experiment, can_start=can_start, n_active=n_active, counters=counters
        )


class SqlSnapshot:
    """:class:`tuner.schedulers.base.Snapshot` over the caller's transaction.

    Order within a rung is ``(loss_rank_kind, loss, trial_number)``: the domain's
    ``(loss, trial_number)`` with non-finite losses (``inf``) last. Counters are read once,
    all together, on first use; ``n_active`` is counted on first use when not given.
    """

    def __init__(
        self,
        store: SqlStore,
        experiment: Experiment,
        *,
        can_start: bool,
        n_active: int | None,
        counters: Counters | None = None,
    ) -> None:
        self._store = store
        self._experiment_id = experiment.id
        self.n_trials = experiment.n_trials
        self._n_active = n_active
        self.can_start = can_start
        self.scheduler_state = experiment.scheduler_state
        self._counters_read = counters

    @property
    def n_active(self) -> int:
        if self._n_active is None:
            self._n_active = self._store.count_active(self._experiment_id)
        return self._n_active

    def _counters(self) -> Counters:
        """Every rung counter of the experiment, and its bracket counters, in one query."""
        if self._counters_read is None:
            rows = self._store._run(_COUNTERS, {"e_id": self._experiment_id})
            self._counters_read = _counters_of(rows)[0]
        return self._counters_read

    def _rung(self, bracket: int, rung: int, **more: Any) -> dict[str, Any]:
        return {"e_id": self._experiment_id, "bracket_": bracket, "rung_": rung, **more}

    def _count(self, stmt: Select[Any], limit: int, params: dict[str, Any]) -> int:
        if limit <= 0:
            return 0
        return int(self._store._run(stmt, {**params, "limit_": limit}).scalar() or 0)

    def n_in_bracket(self, bracket: int) -> int:
        return self._counters()[1].get(bracket, 0)

    def rung_size(self, bracket: int, rung: int) -> int:
        return self._counters()[0].get((bracket, rung), (0, 0, None))[0]

    def best_unpromoted(self, bracket: int, rung: int, top: int) -> RungEntry | None:
        """The first open row c (read with the counters); promotable iff rank(c) < ``top``.

        Every row ranked before c has left the rung (promoted or closed), so with L the
        number of rows that left, rank(c) = L - (left rows ranked after c). If L < top, c is
        promotable outright (and L = 0 means rank 0); otherwise it is iff at least
        L - top + 1 left rows rank after it (cheap in steady state, where few rows that left
        rank below the open ones). The exact rank of a promotable c is then counted (at most
        ``top`` index entries), in the same statement as that test.
        """
        if top <= 0:
            return None
        _, n_left, first = self._counters()[0].get((bracket, rung), (0, 0, None))
        if first is None or first[0] != LOSS_FINITE:  # read with the counters
            return None
        kind, loss, number = first
        if n_left == 0:
            return RungEntry(loss, number, 0)
        needed = max(n_left - top + 1, 0)
        params = self._rung(
            bracket, rung, k_kind=kind, k_loss=loss, k_number=number, top_=top, needed_=needed
        )
        rank = self._store._run(_RANK_IF_PROMOTABLE if needed else _RANK, params).scalar()
        if rank is None or rank >= top:  # rank >= top: cannot happen while counters are right
            return None
        return RungEntry(loss, number, int(rank))

    def count_better(self, bracket: int, rung: int, loss: float, limit: int) -> int:
        if math.isnan(loss) or loss == -math.inf:  # -inf: nothing is better
            return 0
        if math.isfinite(loss):
            return self._count(_COUNT_FINITE_BELOW, limit, self._rung(bracket, rung, loss_=loss))
        return self._count(_COUNT_FINITE, limit, self._rung(bracket, rung))

    def rung_entries(self, bracket: int, rung: int) -> list[RungEntry]:
        rows = self._store._run(_RUNG_ENTRIES, self._rung(bracket, rung)).all()
        return [
            RungEntry(stored_loss(loss, kind), number, i)
            for i, (kind, loss, number) in enumerate(map(tuple, rows))
        ]


if TYPE_CHECKING:  # mypy proves that the classes satisfy the protocols

    def _is_store(session: Session) -> Store:
        return SqlStore(session)

    def _is_snapshot(store: SqlStore, experiment: Experiment) -> Snapshot:
        return store.snapshot(experiment, can_start=True, n_active=0)
