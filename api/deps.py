"""What routes share: the runtime (engine, sessions, clock, metrics, wake-ups) and the one
way to run a transaction.

Every write is one transaction (``Runtime.write``; on the event loop, possibly one member
of a group that commits together, :mod:`api.group_commit`) that commits before the route
answers, so an acknowledged report is durable. Transient database failures (PostgreSQL
deadlocks and serialization failures, SQLite "database is locked") roll back and run again,
a few times: the coordinator's operations write nothing outside their transaction, so a
retry is safe.
Writes of one process queue for a few slots in memory (``write_slots``): one on SQLite,
whose writes are serial anyway (queueing here beats spinning in SQLite's busy handler;
``BEGIN IMMEDIATE`` still guards against other processes), ``write_concurrency`` on
PostgreSQL, where more concurrent writers would only wait on the same experiment's row lock
while competing for the GIL.

Routes of the job protocol use :meth:`Runtime.write_async`: on PostgreSQL their
transactions run on the event loop (the synchronous coordinator in a greenlet over an async
connection, ``async_slots`` of them at once; those of one experiment committed in groups,
:mod:`api.group_commit`), so the hot path has no worker threads at all.
Everything else (the reaper, admin routes, the dashboard) runs :meth:`Runtime.write` and
:meth:`Runtime.read` in worker threads.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import greenlet_spawn

from api.group_commit import GroupCommit, Member
from api.metrics import Metrics
from api.quiet_reports import KnownJobs
from api.settings import Settings
from tuner.storage.sql import SqlStore

T = TypeVar("T")

_RETRIES = 6
#: Groups of one experiment's transactions in flight at once (api.group_commit).
EXPERIMENT_SLOTS = 2
#: Transactions that one group runs at most.
MAX_GROUP = 32
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


def is_transient(exc: DBAPIError) -> bool:
    """Deadlock, serialization failure, lock not available, SQLite's busy lock, or a pooled
    connection that turned out dead (e.g. PostgreSQL restarted): worth one more try."""
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig) or "database is busy" in str(exc.orig)


class Wakeups:
    """Long-polling claims sleep here; writes that may make work appear wake them.

    One condition with a generation counter per experiment and one for any experiment.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._by_experiment: dict[int, int] = {}
        self._any = 0

    def seen(self, experiment_id: int | None) -> int:
        with self._cond:
            return self._any if experiment_id is None else self._by_experiment.get(experiment_id, 0)

    def notify(self, experiment_id: int) -> None:
        with self._cond:
            self._by_experiment[experiment_id] = self._by_experiment.get(experiment_id, 0) + 1
            self._any += 1
            self._cond.notify_all()

    def wait(self, experiment_id: int | None, seen: int, timeout_s: float) -> bool:
        """Sleep until ``experiment_id`` (None: any) changes from ``seen``, or the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.seen(experiment_id) != seen, timeout_s)


@dataclass
class Runtime:
    """The process-wide objects of one app, on ``app.state.runtime``."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    read_factory: sessionmaker[Session]
    clock: Callable[[], float]
    metrics: Metrics = field(default_factory=Metrics)
    wakeups: Wakeups = field(default_factory=Wakeups)
    write_slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(4))
    # PostgreSQL: the event loop's own engine and write slots (made by the app's lifespan).
    async_engine: AsyncEngine | None = None
    async_slots: asyncio.Semaphore | None = None
    # PostgreSQL: those transactions of one experiment, committed in groups.
    groups: GroupCommit | None = None
    # PostgreSQL: psycopg connections in autocommit, for statements that are a
    # transaction on their own and take no lock (api.quiet_reports).
    quiet_pool: AsyncConnectionPool | None = None
    # Jobs this process handed out or served, for quiet reports (api.quiet_reports).
    known_jobs: KnownJobs = field(default_factory=KnownJobs)
    round_robin: int = 0
    _worker_seen: dict[str, float] = field(default_factory=dict)

    def should_touch_worker(self, worker_id: str, now: float, every_s: float = 5.0) -> bool:
        """Whether to write a worker's ``last_seen_at`` now: at most every ``every_s`` per
        worker and process, so a busy worker does not add a write to every claim."""
        last = self._worker_seen.get(worker_id)
        if last is not None and now - last < every_s:
            return False
        if len(self._worker_seen) > 100_000:
            self._worker_seen.clear()
        self._worker_seen[worker_id] = now
        return True

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def now(self) -> float:
        return self.clock()

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.db.labels(operation).observe(time.perf_counter() - start)

    def write(self, operation: str, fn: Callable[[SqlStore], T]) -> T:
        """Run ``fn`` in one write transaction; commit, or roll back on any exception."""
        for attempt in range(_RETRIES):
            try:
                with (
                    self.write_slots,
                    self.timed(operation),
                    self.session_factory.begin() as session,
                ):
                    store = SqlStore(session)
                    result = fn(store)
                    store.flush()  # with its checks (SqlStore.flush), as on the event loop
                    return result
            except DBAPIError as exc:
                if attempt == _RETRIES - 1 or not is_transient(exc):
                    raise
                self.metrics.db_retries.labels(operation).inc()
            time.sleep(random.uniform(0.001, 0.01 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def write_async(
        self, operation: str, fn: Callable[[SqlStore], T], experiment_id: int | None = None
    ) -> T:
        """:meth:`write` for a route on the event loop.

        On PostgreSQL, ``fn`` (plain synchronous code: the coordinator over a
        :class:`SqlStore`) runs on the event loop itself, in a greenlet that yields at every
        database round trip (over psycopg's async connection): no worker thread, so no
        hand-off between threads and no fight for the GIL with the one that holds an
        experiment's lock. The whole transaction (checkout, BEGIN, ``fn``, COMMIT, checkin)
        is one greenlet, on the async engine's synchronous facade: ``AsyncConnection``'s
        begin, ``run_sync``, commit and close would be one each, and cost a seventh of the
        service's CPU per request (docs/PERFORMANCE.md). SQLite runs :meth:`write` in a
        worker thread (its driver has no async I/O).

        ``experiment_id``: the experiment whose lock ``fn`` takes (when the caller knows
        it). Its transactions are committed in groups (:mod:`api.group_commit`): those that
        queue behind one another on that lock run in one transaction, each as if alone.
        """
        if self.async_engine is None or self.async_slots is None:
            return await run_in_threadpool(self.write, operation, fn)
        if experiment_id is not None and self.groups is not None:
            return await self.groups.submit(experiment_id, operation, fn)
        result: T = (await self._transact([operation], [fn]))[0]
        return result

    async def run_group(self, members: list[Member]) -> None:
        """Run a group of one experiment's transactions (:mod:`api.group_commit`) in one
        transaction and settle each member; when that fails, each in its own."""
        if len(members) > 1:
            self.metrics.write_groups.observe(len(members))
            try:
                results = await self._transact(
                    [m.operation for m in members], [m.fn for m in members]
                )
            except Exception:  # noqa: BLE001 - a member's answer is its own: run each alone
                pass
            else:
                for member, result in zip(members, results, strict=True):
                    member.settle(result)
                return
        for member in members:
            if member.future.done():  # its caller left
                continue
            try:
                member.settle((await self._transact([member.operation], [member.fn]))[0])
            except Exception as exc:  # noqa: BLE001 - the caller's route raises it
                member.fail(exc)

    async def _transact(
        self, operations: list[str], fns: list[Callable[[SqlStore], Any]]
    ) -> list[Any]:
        """Run ``fns`` one after another in one transaction on the event loop, each over a
        store of its own; again after a transient error (:func:`is_transient`)."""
        assert self.async_engine is not None
        assert self.async_slots is not None
        engine = self.async_engine.sync_engine

        def run() -> list[Any]:
            results = []
            with engine.begin() as connection:
                for fn in fns:
                    store = SqlStore.on_connection(connection)
                    results.append(fn(store))
                    store.flush()
            return results

        for attempt in range(_RETRIES):
            try:
                async with self.async_slots:
                    start = time.perf_counter()
                    try:
                        return await greenlet_spawn(run)
                    finally:
                        elapsed = time.perf_counter() - start
                        for operation in operations:
                            self.metrics.db.labels(operation).observe(elapsed)
            except DBAPIError as exc:
                if attempt == _RETRIES - 1 or not is_transient(exc):
                    raise
                for operation in operations:
                    self.metrics.db_retries.labels(operation).inc()
            await asyncio.sleep(random.uniform(0.001, 0.01 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, operation: str, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one read-only transaction (SQLite: a WAL snapshot, no write lock);
        once more on a fresh connection if the pooled one turned out dead."""
        for attempt in (1, 2):
            try:
                with self.timed(operation), self.read_factory.begin() as session:
                    return fn(session)
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                self.metrics.db_retries.labels(operation).inc()
        raise AssertionError("unreachable")  # pragma: no cover


async def get_runtime(request: Request) -> Runtime:
    """Async, like every dependency that does no I/O: FastAPI runs a plain ``def``
    dependency in a worker thread, a hand-off per request for nothing."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

#: A path id: non-negative and within a 32-bit column (larger ones are unknown ids anyway).
Id = Annotated[int, Path(ge=0, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
