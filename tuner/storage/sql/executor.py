"""How the SQL store runs its statements (:class:`Executor`): the only module that touches
SQLAlchemy's internals (its compiler's results and its async bridge).

An :class:`Executor` runs the statements of one transaction, on an ORM Session's connection
or on a connection whose transaction the caller began. On SQLite it hands each statement to
``Connection.execute``. On PostgreSQL it runs them on the driver's cursor, past SQLAlchemy's
per-execution work. Every statement of the store is a
module-level constant or built once and cached, so its compiled SQL, the processors of its
bind parameters and result columns, and its row shape are worked out once per statement
(:func:`plan_for`); an execution is then the driver's execute and those processors. Through
``Connection.execute`` the same statement costs about 50 µs of CPU more (execution context,
compiled-cache lookup, result metadata), a tenth of a hot transaction's CPU (measured; see
docs/PERFORMANCE.md).

Only what SQLAlchemy would hand to the driver unchanged is planned: a statement with
parameters rendered at execution time ("post-compile", e.g. ``IN`` over a tuple), escaped
parameter names or Python-side column defaults returns None, and the caller executes it
through SQLAlchemy as before. Errors are raised as SQLAlchemy raises them
(:meth:`sqlalchemy.exc.DBAPIError.instance`), and a connection that an error shows dead is
invalidated, so the service's retry of transient errors sees what it saw before.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Connection, CursorResult, Insert, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine
from sqlalchemy.util import await_, greenlet_spawn

Processor = Callable[[Any], Any]
T = TypeVar("T")

#: How many statements each cache below holds before it starts again (the store's own
#: statements are a few dozen).
MAX_PLANS = 512


@dataclass
class Plan:
    """A statement compiled for one dialect, with its processors."""

    sql: str
    compiled: SQLCompiler
    binds: tuple[tuple[str, Processor], ...]  # parameters whose values need processing
    columns: tuple[TypeEngine[Any], ...]  # the result columns' types (empty: unknown)
    # What the first execution's description told (the SQL fixes it): whether the statement
    # returns rows, and if so their processors (None: none needed) and shape.
    returns_rows: bool | None = None
    processors: tuple[Processor | None, ...] | None = None
    shape: type = tuple


class Rows:
    """The part of :class:`sqlalchemy.engine.Result` the store uses, over fetched rows."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise (NoResultFound if not self._rows else MultipleResultsFound)(
                f"expected one row, got {len(self._rows)}"
            )
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


# The caches are shared by the server's threads and its event loop: each dict operation is
# atomic under the GIL, and a race costs at most a plan made twice.
_Key = tuple[int, str, tuple[str, ...] | None]  # statement id, dialect, parameter names
#: Statements seen once (kept, so that their ids are not reused while they are here).
_seen: dict[_Key, Executable] = {}
#: Statements seen again, with their plans (None: SQLAlchemy runs them).
_plans: dict[_Key, tuple[Executable, Plan | None]] = {}
_shapes: dict[tuple[str, ...], type] = {}
#: Statements that SQLAlchemy compiles to the columns their parameters name.
_PER_COLUMNS = (Insert, Update)


def plan_for(stmt: Executable, dialect: Dialect, params: dict[str, Any]) -> Plan | None:
    """The plan of ``stmt``, or None where SQLAlchemy runs it.

    A statement is planned the second time it is run: one built for a single call (values
    inlined) is never seen again, and SQLAlchemy's compiled cache serves it better. An
    INSERT or UPDATE compiles to the columns its parameters name (as SQLAlchemy compiles
    it per execution), so its plan is per set of parameter names."""
    columns = tuple(sorted(params)) if isinstance(stmt, _PER_COLUMNS) else None
    key = (id(stmt), dialect.name, columns)
    found = _plans.get(key)
    if found is not None and found[0] is stmt:
        return found[1]
    if _seen.get(key) is not stmt:
        if len(_seen) >= MAX_PLANS:
            _seen.clear()
        _seen[key] = stmt
        return None
    _seen.pop(key, None)  # (another thread may have cleared it)
    if len(_plans) >= MAX_PLANS:
        _plans.clear()
    plan = _make_plan(stmt, dialect, columns)
    _plans[key] = (stmt, plan)
    return plan


def _make_plan(
    stmt: Executable, dialect: Dialect, columns: tuple[str, ...] | None
) -> Plan | None:
    kw = {} if columns is None else {"column_keys": list(columns)}
    compiled = stmt.compile(dialect=dialect, **kw)  # type: ignore[attr-defined]
    if not isinstance(compiled, SQLCompiler) or compiled.positional:
        return None
    if (
        compiled.post_compile_params
        or compiled.literal_execute_params
        or compiled.escaped_bind_names
        or compiled.insert_prefetch
        or compiled.update_prefetch
    ):
        return None
    binds: dict[str, Processor] = {}  # by name: a parameter used twice is processed once
    for param in compiled.binds.values():
        processor = param.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            binds.setdefault(compiled.bind_names[param], processor)
    # The result columns as the compiler rendered them: a statement's own
    # ``exported_columns`` can be stale when it was derived (``.returning()`` again) from a
    # statement whose columns were read before (seen with SQLAlchemy 2.1).
    rendered = getattr(compiled, "_result_columns", None)
    if rendered is not None:
        types = tuple(entry.type for entry in rendered)
    else:
        types = tuple(column.type for column in getattr(stmt, "exported_columns", ()))
    return Plan(compiled.string, compiled, tuple(binds.items()), types)


def _learn_rows(plan: Plan, dialect: Dialect, description: Sequence[Any] | None) -> None:
    """Fill in ``plan``'s row facts from the driver's description of its first result."""
    if description is None:
        plan.returns_rows = False
        return
    names = tuple(column[0] for column in description)
    shape = _shapes.get(names)
    if shape is None:
        shape = _shapes[names] = namedtuple("Row", names, rename=True)
    processors: tuple[Processor | None, ...] | None = None
    if len(plan.columns) == len(description):
        processors = tuple(
            kind.dialect_impl(dialect).result_processor(dialect, column[1])
            for kind, column in zip(plan.columns, description, strict=True)
        )
        if all(p is None for p in processors):
            processors = None
    elif plan.columns:
        raise AssertionError(
            f"{plan.sql!r}: {len(description)} columns, expected {len(plan.columns)}"
        )
    plan.processors, plan.shape, plan.returns_rows = processors, shape, True


def _values(plan: Plan, params: dict[str, Any]) -> Any:
    values = plan.compiled.construct_params(params, escape_names=False)
    for name, processor in plan.binds:
        values[name] = processor(values[name])
    return values


def _raise(connection: Connection, plan: Plan, values: Any, exc: Any, cursor: Any) -> NoReturn:
    """Raise the driver's ``exc`` as SQLAlchemy would (invalidating a dead connection)."""
    dialect = connection.dialect
    gone = dialect.is_disconnect(exc, connection.connection, cursor)
    if gone:
        connection.invalidate(exc)
    raise DBAPIError.instance(
        plan.sql, values, exc, dialect.loaded_dbapi.Error,
        connection_invalidated=gone, dialect=dialect,
    ) from exc


def run(connection: Connection, plan: Plan, params: dict[str, Any]) -> Rows:
    """Execute ``plan`` in ``connection``'s transaction; the rows, processed."""
    values = _values(plan, params)
    dialect = connection.dialect
    cursor = connection.connection.cursor()
    try:
        cursor.execute(plan.sql, values)
        if plan.returns_rows is None:
            _learn_rows(plan, dialect, cursor.description)
        fetched = cursor.fetchall() if plan.returns_rows else []
        rowcount = cursor.rowcount
    except dialect.loaded_dbapi.Error as exc:
        _raise(connection, plan, values, exc, cursor)
    finally:
        cursor.close()
    return _processed(plan, fetched, rowcount)


async def run_async(
    driver_connection: Any, dialect: Dialect, plan: Plan, params: dict[str, Any]
) -> Rows:
    """Execute ``plan`` (planned for ``dialect``) on a psycopg ``AsyncConnection`` of the
    caller's own: no SQLAlchemy connection, no greenlet. The driver's errors are raised as
    they are."""
    values = _values(plan, params)
    async with driver_connection.cursor() as cursor:
        await cursor.execute(plan.sql, values)
        if plan.returns_rows is None:
            _learn_rows(plan, dialect, cursor.description)
        fetched = (await cursor.fetchall()) if plan.returns_rows else []
        return _processed(plan, fetched, cursor.rowcount)


def run_pipeline(
    connection: Connection, statements: Sequence[tuple[Plan, dict[str, Any]]]
) -> list[Rows]:
    """Execute planned statements in order (each sees what those before it wrote) in one
    round trip: psycopg's pipeline mode, on the connection's driver (on the event loop's, in
    the greenlet that runs the transaction). An error aborts those after it and is raised."""
    plans = [plan for plan, _ in statements]
    values = [_values(plan, params) for plan, params in statements]
    dialect = connection.dialect
    driver: Any = connection.connection.driver_connection

    def fetched(cursors: list[Any]) -> Iterator[tuple[Plan, Any]]:
        for cursor, plan in zip(cursors, plans, strict=True):
            if plan.returns_rows is None:
                _learn_rows(plan, dialect, cursor.description)
            yield plan, cursor

    async def all_async() -> list[tuple[list[Any], int]]:
        cursors = [driver.cursor() for _ in plans]
        try:
            async with driver.pipeline():
                for cursor, plan, bound in zip(cursors, plans, values, strict=True):
                    await cursor.execute(plan.sql, bound)
            return [
                ((await cursor.fetchall()) if plan.returns_rows else [], cursor.rowcount)
                for plan, cursor in fetched(cursors)
            ]
        finally:
            for cursor in cursors:
                await cursor.close()

    def all_sync() -> list[tuple[list[Any], int]]:
        cursors = [driver.cursor() for _ in plans]
        try:
            with driver.pipeline():
                for cursor, plan, bound in zip(cursors, plans, values, strict=True):
                    cursor.execute(plan.sql, bound)
            return [
                (cursor.fetchall() if plan.returns_rows else [], cursor.rowcount)
                for plan, cursor in fetched(cursors)
            ]
        finally:
            for cursor in cursors:
                cursor.close()

    try:
        results = await_(all_async()) if dialect.is_async else all_sync()
    except dialect.loaded_dbapi.Error as exc:
        _raise(connection, plans[0], values[0], exc, None)
    return [
        _processed(plan, rows, n) for plan, (rows, n) in zip(plans, results, strict=True)
    ]


def _processed(plan: Plan, fetched: Sequence[Any], rowcount: int) -> Rows:
    if not fetched:
        return Rows([], rowcount)
    processors, shape = plan.processors, plan.shape
    if processors is None:
        return Rows([shape(*row) for row in fetched], rowcount)
    return Rows(
        [
            shape(*(v if p is None else p(v) for p, v in zip(processors, row, strict=True)))
            for row in fetched
        ],
        rowcount,
    )


async def run_async_statement(
    driver_connection: Any, dialect: Dialect, stmt: Executable, params: dict[str, Any]
) -> Rows:
    """Execute ``stmt`` on a psycopg ``AsyncConnection`` of the caller's own (a statement
    that is a transaction on its own, in autocommit): no SQLAlchemy connection nor greenlet.
    The driver's errors are raised as they are."""
    # Planned at once: there is no SQLAlchemy connection to fall back on.
    plan = plan_for(stmt, dialect, params) or plan_for(stmt, dialect, params)
    if plan is None:  # pragma: no cover - every statement run this way has a plan
        raise TypeError(f"{stmt!r} cannot run on the driver's connection")
    return await run_async(driver_connection, dialect, plan, params)


async def in_greenlet(fn: Callable[[], T]) -> T:
    """Run synchronous ``fn`` (a transaction over an async engine's synchronous facade) on
    the event loop, in a greenlet that yields to the loop at every database wait."""
    result: T = await greenlet_spawn(fn)
    return result


Pair = tuple[Executable, dict[str, Any]]


class Executor:
    """Runs one transaction's statements, on an ORM Session's connection (``session``) or
    on ``connection``, whose transaction the caller began and ends."""

    def __init__(
        self, *, session: Session | None = None, connection: Connection | None = None
    ) -> None:
        if session is None and connection is None:
            raise TypeError("an Executor needs a session or a connection")
        self._session, self._connection = session, connection
        bind = connection if connection is not None else session.get_bind()  # type: ignore[union-attr]
        self.dialect_name: str = bind.dialect.name
        self.is_postgres = self.dialect_name == "postgresql"
        #: Statements run on the driver's cursor where they have a plan (PostgreSQL).
        self.direct = self.is_postgres

    @property
    def session(self) -> Session:
        """The ORM Session of this transaction (made on first use over a connection: bound
        to a connection in a transaction, it joins that transaction)."""
        if self._session is None:
            self._session = Session(bind=self._connection)
        return self._session

    def connection(self) -> Connection:
        connection = self._connection
        if connection is None:
            connection = self._connection = self.session.connection()
        return connection

    def flush(self) -> None:
        """Write what the ORM Session holds (if one was made); call before the commit."""
        if self._session is not None:
            self._session.flush()

    def run(self, stmt: Executable, params: dict[str, Any]) -> CursorResult[Any] | Rows:
        """Execute ``stmt`` in this transaction (PostgreSQL: on the driver's cursor where
        the statement has a plan)."""
        connection = self.connection()
        if self.direct:
            plan = plan_for(stmt, connection.dialect, params)
            if plan is not None:
                return run(connection, plan, params)
        return connection.execute(stmt, params)

    def run_pipeline(self, statements: Sequence[Pair]) -> list[Rows] | None:
        """Statements in one round trip, in order (each sees what those before it did):
        PostgreSQL's pipeline, once all have plans; None when one has none yet (the caller
        runs them one by one)."""
        if not self.direct:
            return None
        connection = self.connection()
        plans = [plan_for(stmt, connection.dialect, params) for stmt, params in statements]
        planned = [
            (plan, params)
            for plan, (_, params) in zip(plans, statements, strict=True)
            if plan is not None
        ]
        if len(planned) < len(statements):
            return None
        return run_pipeline(connection, planned)
