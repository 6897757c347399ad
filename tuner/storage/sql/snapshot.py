"""The SQL :class:`tuner.schedulers.base.Snapshot` (:class:`SqlSnapshot`) and its queries.

:class:`SqlSnapshot` reads all rung and bracket counters of the experiment, with each rung's
first open result (an index seek per rung), in one query the first time the scheduler asks
(they are few rows: brackets x rungs); a claim gets them from
:meth:`tuner.storage.sql.store.SqlStore.next_queued_job`, which reads them in the same statement
as the queue (:data:`COUNTERS_AND_QUEUED`). Ranks are index-range counts on
``rung_results`` (ordered by ``(loss_rank_kind, loss, trial_number)``, with and without
``status`` in front); no query loads a rung or the experiment's trials, except
:meth:`SqlSnapshot.rung_entries` (small rungs only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Integer,
    Select,
    bindparam,
    case,
    func,
    literal,
    null,
    select,
    true,
    tuple_,
    union_all,
)

from tuner.domain import Experiment, JobState, RungEntry
from tuner.storage.models import LOSS_FINITE, RUNG_CLOSED, RUNG_OPEN, RUNG_PROMOTED
from tuner.storage.sql.cache import Counters, Head, TransactionCache
from tuner.storage.sql.statements import EXPERIMENT_ID, LIMIT_ONE
from tuner.storage.sql.tables import BRACKETS, JOB, RESULT, RUNG_RESULTS, RUNGS, stored_loss

#: Runs one statement in the snapshot's transaction (``SqlStore.execute``).
Run = Callable[[Any, dict[str, Any]], Any]

# The snapshot's reads: one rung of one bracket, in rank order.
_BRACKET, _RUNG = bindparam("bracket_", type_=Integer), bindparam("rung_", type_=Integer)


def _in_rung(table: Any) -> tuple[ColumnElement[bool], ...]:
    """Rows of ``table`` (``rung_results`` or an alias) in the asked rung of the bracket."""
    return (
        table.c.experiment_id == EXPERIMENT_ID,
        table.c.bracket == _BRACKET,
        table.c.rung == _RUNG,
    )


def _rank_order(table: Any) -> tuple[ColumnElement[Any], ...]:
    return (table.c.loss_rank_kind, table.c.loss, table.c.trial_number)


def _counted(table: Any, limit: BindParameter[int], *where: ColumnElement[bool]) -> Any:
    """``count(*)`` of at most ``limit`` rows of ``table`` (an index range, stopped early)."""
    inner = select(table.c.id).where(*where).limit(limit).subquery()
    return select(func.count()).select_from(inner)


def _counter_rows(lateral: bool) -> tuple[Select[Any], Select[Any]]:
    """Every rung counter (rung >= 0) of the experiment with the rung's first open row (its
    rank key; an index seek per rung), and every bracket counter (rung -1): few rows.
    ``lateral`` (PostgreSQL): the first open row is a LATERAL subquery, which no plan can
    turn into a hash of the whole table (a prepared statement's generic plan, made while
    the table was small, once did; SQLite has no LATERAL, and joins on the row's id)."""
    open_row = RUNG_RESULTS.alias("open_row")
    first_open = (
        select(*_rank_order(open_row) if lateral else (open_row.c.id,))
        .where(
            open_row.c.experiment_id == RUNGS.c.experiment_id,
            open_row.c.bracket == RUNGS.c.bracket,
            open_row.c.rung == RUNGS.c.rung,
            open_row.c.status == RUNG_OPEN,
        )
        .order_by(*_rank_order(open_row))
        .limit(LIMIT_ONE)
    )
    if lateral:
        head: Any = first_open.lateral("head")
        joined = RUNGS.outerjoin(head, true())
    else:
        head = RUNG_RESULTS.alias("head")
        joined = RUNGS.outerjoin(head, head.c.id == first_open.correlate(RUNGS).scalar_subquery())
    rungs = (
        select(RUNGS.c.bracket, RUNGS.c.rung, RUNGS.c.n_results, RUNGS.c.n_left, *_rank_order(head))
        .select_from(joined)
        .where(RUNGS.c.experiment_id == EXPERIMENT_ID)
    )
    none = (null(), null(), null())
    brackets = select(
        BRACKETS.c.bracket, literal(-1), BRACKETS.c.n_trials, literal(0), *none
    ).where(BRACKETS.c.experiment_id == EXPERIMENT_ID)
    return rungs, brackets


# The same plus the oldest queued job's id (rung -2), if any: a claim's first read.
_oldest_queued = (
    select(JOB.id)
    .where(JOB.experiment_id == EXPERIMENT_ID, JOB.state == JobState.QUEUED)
    .order_by(JOB.id)
    .limit(LIMIT_ONE)
    .subquery("oldest_queued")
)
_QUEUED_ROW = select(
    literal(-1), literal(-2), _oldest_queued.c.id, literal(0), null(), null(), null()
).select_from(_oldest_queued)
#: The counters, and the counters with the queue: by whether the store is on PostgreSQL.
COUNTERS = {pg: union_all(*_counter_rows(pg)) for pg in (False, True)}
COUNTERS_AND_QUEUED = {pg: union_all(*_counter_rows(pg), _QUEUED_ROW) for pg in (False, True)}

def counters_of(rows: Iterable[Any]) -> tuple[Counters, int | None]:
    """Parse :data:`COUNTERS` or :data:`COUNTERS_AND_QUEUED`: the counters, a job id."""
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
    RUNG_RESULTS, _LIMIT, *_in_rung(RUNG_RESULTS), RESULT.loss_rank_kind == LOSS_FINITE
)
_COUNT_FINITE_BELOW = _counted(
    RUNG_RESULTS,
    _LIMIT,
    *_in_rung(RUNG_RESULTS),
    RESULT.loss_rank_kind == LOSS_FINITE,
    RESULT.loss < bindparam("loss_", type_=Float),
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
        RESULT.loss_rank_kind == LOSS_FINITE,
        RESULT.loss <= key_loss,
        tuple_(RESULT.loss, RESULT.trial_number) < tuple_(key_loss, key_number),
    )

    def left_after(status: int) -> Any:
        after = tuple_(*_rank_order(RUNG_RESULTS)) > tuple_(*key)
        where = (*_in_rung(RUNG_RESULTS), RESULT.status == status, after)
        return _counted(RUNG_RESULTS, needed, *where).scalar_subquery()

    promotable = left_after(RUNG_PROMOTED) + left_after(RUNG_CLOSED) >= needed
    return rank, select(case((promotable, rank.scalar_subquery()), else_=None))


_RANK, _RANK_IF_PROMOTABLE = _rank_if_promotable()


class SqlSnapshot:
    """:class:`tuner.schedulers.base.Snapshot` over the caller's transaction.

    Order within a rung is ``(loss_rank_kind, loss, trial_number)``: the domain's
    ``(loss, trial_number)`` with non-finite losses (``inf``) last. Counters are read once,
    all together, on first use; ``n_active`` is counted on first use when not given.
    """

    def __init__(
        self,
        run: Run,
        cache: TransactionCache,
        experiment: Experiment,
        *,
        can_start: bool,
        n_active: int | Callable[[], int],
        counters: Counters | None = None,
        postgres: bool,
    ) -> None:
        self._run, self._cache, self._postgres = run, cache, postgres
        self._experiment_id = experiment.id
        self.n_trials = experiment.n_trials
        self._n_active = n_active
        self.can_start = can_start
        self.scheduler_state = experiment.scheduler_state
        self._counters_read = counters

    @property
    def n_active(self) -> int:
        if callable(self._n_active):
            self._n_active = self._n_active()
        return self._n_active

    def _counters(self) -> Counters:
        """Every rung counter of the experiment, and its bracket counters, in one query."""
        if self._counters_read is None:
            rows = self._run(COUNTERS[self._postgres], {"e_id": self._experiment_id})
            self._counters_read = counters_of(rows)[0]
        return self._counters_read

    def _rung(self, bracket: int, rung: int, **more: Any) -> dict[str, Any]:
        return {"e_id": self._experiment_id, "bracket_": bracket, "rung_": rung, **more}

    def _count(self, stmt: Select[Any], limit: int, params: dict[str, Any]) -> int:
        if limit <= 0:
            return 0
        return int(self._run(stmt, {**params, "limit_": limit}).scalar() or 0)

    def n_in_bracket(self, bracket: int) -> int:
        return self._counters()[1].get(bracket, 0)

    def rung_size(self, bracket: int, rung: int) -> int:
        if self._counters_read is None:
            known = self._cache.rung_sizes.get((self._experiment_id, bracket, rung))
            if known is not None:
                return known
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
        rank = self._run(_RANK_IF_PROMOTABLE if needed else _RANK, params).scalar()
        if rank is None or rank >= top:  # rank >= top: cannot happen while counters are right
            return None
        return RungEntry(loss, number, int(rank))

    def count_better(self, bracket: int, rung: int, loss: float, limit: int) -> int:
        if math.isnan(loss) or loss == -math.inf:  # -inf: nothing is better
            return 0
        if math.isfinite(loss):
            counted = self._cache.ranks.get((self._experiment_id, bracket, rung))
            if counted is not None and counted[0] == loss:
                _, counted_to, n_better = counted
                if limit <= counted_to or n_better < counted_to:  # the count is exact to limit
                    return min(n_better, limit)
            return self._count(_COUNT_FINITE_BELOW, limit, self._rung(bracket, rung, loss_=loss))
        return self._count(_COUNT_FINITE, limit, self._rung(bracket, rung))

    def rung_entries(self, bracket: int, rung: int) -> list[RungEntry]:
        rows = self._run(_RUNG_ENTRIES, self._rung(bracket, rung)).all()
        return [
            RungEntry(stored_loss(loss, kind), number, i)
            for i, (kind, loss, number) in enumerate(map(tuple, rows))
        ]
