"""The service's one write seam (:class:`Writer`): every write transaction, the fast path
for plain reports, and the jobs this process knows.

Every write is one transaction that commits before the route answers, so an acknowledged
report is durable. Transient database failures (PostgreSQL deadlocks and serialization
failures, SQLite "database is locked", a pooled connection found dead) roll back and run
again, a few times: the coordinator's operations write nothing outside their transaction,
so a retry is safe.

- :meth:`Writer.write` runs a transaction in the caller's thread (admin routes, the reaper).
  Writes of one process queue for a few slots in memory: one on SQLite, whose writes are
  serial anyway (queueing here beats spinning in SQLite's busy handler; ``BEGIN IMMEDIATE``
  still guards against other processes), ``write_concurrency`` on PostgreSQL, where more
  concurrent writers would only wait on the same experiment's row lock while competing for
  the GIL.
- :meth:`Writer.write_async` runs the job protocol's transactions. On PostgreSQL they run on
  the event loop itself (the synchronous coordinator in a greenlet over an async
  connection: no worker thread, no fight for the GIL with the thread that holds an
  experiment's lock), and those of one experiment that queue behind its lock are committed
  in groups (:mod:`api.group_commit`). SQLite runs :meth:`write` in a worker thread.
- :meth:`Writer.write_plain_report` is the fast path of a report that needs no judgement
  (PostgreSQL): the report plan (:func:`tuner.protocol.plan_report`) of a job this process
  knows (:class:`KnownJobs`) says whether it may be a plain write, and the store's own
  statement (:func:`tuner.storage.sql.postgres.step_statement`, guarded by the plan's
  bounds) stores it in one autocommit round trip on a connection of the fast pool, which
  never queues behind transactions that wait for a lock. When a bound does not hold, the
  statement writes nothing and the caller takes the full path.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from api.group_commit import GroupCommit, Member
from api.metrics import Metrics
from tuner.coordinator.outcomes import Context
from tuner.coordinator.report import KnownJob, step_changes
from tuner.domain import Experiment, Job, Report
from tuner.protocol import hash_token
from tuner.storage.database import driver_conninfo
from tuner.storage.sql import SqlStore, open_store, store_on
from tuner.storage.sql.executor import in_greenlet, run_async_statement
from tuner.storage.sql.postgres import step_statement, step_was_stored
from tuner.wire import ReportIn

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


class KnownJobs:
    """The live jobs this process handed out or served, with their experiment's rule (what
    never changes once a job is leased, or once an experiment is made), bounded: past
    ``limit`` it starts over (a forgotten job takes the full path once, which makes it
    known again). A job another replica handed out is likewise learnt on its first report."""

    def __init__(self, limit: int = 100_000) -> None:
        self._jobs: dict[int, KnownJob] = {}
        self._contexts: dict[int, Context] = {}
        self._limit = limit

    def remember(self, job: Job, experiment: Experiment) -> None:
        if len(self._jobs) >= self._limit:
            self._jobs.clear()
            self._contexts.clear()
        ctx = self._contexts.get(experiment.id)
        if ctx is None:
            ctx = self._contexts[experiment.id] = Context.of(experiment)
        self._jobs[job.id] = KnownJob(job, ctx, experiment.n_trials)

    def forget(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)

    def get(self, job_id: int) -> KnownJob | None:
        return self._jobs.get(job_id)

    def __len__(self) -> int:
        return len(self._jobs)


class Writer:
    """Every write of one app (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        session_factory: sessionmaker[Session],
        metrics: Metrics,
        *,
        concurrency: int,
    ) -> None:
        self.engine = engine
        self.session_factory = session_factory
        self.metrics = metrics
        self.is_postgres = engine.dialect.name == "postgresql"
        self.concurrency = concurrency
        self.slots = threading.Semaphore(concurrency if self.is_postgres else 1)
        self.known_jobs = KnownJobs()
        # PostgreSQL, made on the event loop that runs them (start_async): the loop's own
        # engine and write slots, the group commit of one experiment's transactions, and
        # the fast pool (psycopg connections in autocommit, for plain reports).
        self.async_engine: AsyncEngine | None = None
        self.async_slots: asyncio.Semaphore | None = None
        self.groups: GroupCommit | None = None
        self.fast_pool: AsyncConnectionPool | None = None

    async def start_async(self) -> None:
        """Make the event loop's engine, slots, groups and fast pool (PostgreSQL)."""
        if not self.is_postgres:
            return
        # Used only under async_slots: never more connections than slots.
        self.async_engine = create_async_engine(
            self.engine.url, pool_size=self.concurrency, max_overflow=0
        )
        self.async_slots = asyncio.Semaphore(self.concurrency)
        self.groups = GroupCommit(self.run_group, slots=EXPERIMENT_SLOTS, max_group=MAX_GROUP)
        self.fast_pool = AsyncConnectionPool(
            driver_conninfo(self.engine.url), min_size=1, max_size=self.concurrency,
            kwargs={"autocommit": True}, open=False,
        )
        await self.fast_pool.open()

    async def stop_async(self) -> None:
        if self.async_engine is not None:
            await self.async_engine.dispose()
        if self.fast_pool is not None:
            await self.fast_pool.close()
        self.async_engine = self.async_slots = self.groups = self.fast_pool = None

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
                with self.slots, self.timed(operation), self.session_factory.begin() as session:
                    store = open_store(session)
                    result = fn(store)
                    store.flush()
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

        On PostgreSQL, ``fn`` runs on the event loop itself, in a greenlet that yields at
        every database round trip. The whole transaction (checkout, BEGIN, ``fn``, COMMIT,
        checkin) is one greenlet, on the async engine's synchronous facade:
        ``AsyncConnection``'s begin, ``run_sync``, commit and close would be one each, and
        cost a seventh of the service's CPU per request (docs/PERFORMANCE.md).

        ``experiment_id``: the experiment whose lock ``fn`` takes (when the caller knows
        it). Its transactions are committed in groups (:mod:`api.group_commit`).
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
                    store = store_on(connection)
                    results.append(fn(store))
                    store.flush()
            return results

        for attempt in range(_RETRIES):
            try:
                async with self.async_slots:
                    start = time.perf_counter()
                    try:
                        return await in_greenlet(run)
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

    async def write_plain_report(
        self, job_id: int, body: ReportIn, value: float, now: float
    ) -> bool:
        """The fast path: True when the report was stored as a plain write (its answer is
        ``continue``); False when the full path must answer (nothing was written)."""
        known = self.known_jobs.get(job_id)
        pool, engine = self.fast_pool, self.async_engine
        if known is None or pool is None or engine is None:
            return False
        known.require_metric(body.metric)  # refused before anything is written
        plan = known.plan(body.step, value)
        if not plan.may_be_plain:
            return False
        job = known.job
        stmt, params = step_statement(
            Report(job.trial_id, job.id, body.step, value, body.metrics or {}, now),
            plan.bounds(hash_token(body.lease_token), now),
            known.ctx.config.lease_until(now),
            step_changes(value, body.step, body.checkpoint),
        )
        try:
            with self.timed("report"):
                async with pool.connection() as connection:
                    rows = await run_async_statement(connection, engine.dialect, stmt, params)
        except psycopg.Error:
            self.metrics.db_retries.labels("report_fast").inc()
            return False  # the full path runs it again, with its retries, and answers
        return step_was_stored(rows.one())
