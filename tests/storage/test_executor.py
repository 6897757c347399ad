"""Statements on the driver's cursor (tuner.storage.sql.executor), on a real PostgreSQL: the same
answers as through SQLAlchemy, its errors, and a dead connection invalidated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tests.conftest import DB_PARAMS
from tests.storage.test_store_contract import make_config
from tuner.domain import DecisionKind, DecisionRecord, Report, RungResult, TrialState
from tuner.storage.database import make_engine, make_session_factory
from tuner.storage.sql import SqlStore, executor, open_store, store_on
from tuner.store import Judging, Lease, RungStop, StepBounds

pytestmark = pytest.mark.parametrize("db_url", [DB_PARAMS[1]], indirect=True)


@pytest.fixture
def pg(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _seed(engine: Engine) -> tuple[int, int]:
    with make_session_factory(engine).begin() as session:
        store = open_store(session)
        experiment_id = store.create_experiment(make_config(), 1.0).id
        _, job = store.start_trial(
            experiment_id, 0, {"lr": 0.1}, "k1", 2.0, rung=0, resource=1,
            lease=Lease("w", "hash", 60.0), reason={"rule": "test"},
        )
        return experiment_id, job.id


def _reads(store: SqlStore, experiment_id: int, job_id: int) -> list[Any]:
    return [
        store.get_experiment(experiment_id, lock=True),
        store.load_job(job_id, step=1),
        store.get_job(job_id),
        store.next_queued_job(experiment_id),
        store.count_active(experiment_id),
    ]


def test_executor_answers_as_sqlalchemy_does(pg: Engine) -> None:
    experiment_id, job_id = _seed(pg)
    factory = make_session_factory(pg)
    answers = {}
    for on in (False, True):
        with factory.begin() as session:
            store = open_store(session)
            store.executor.direct = on
            # The second run of each statement is the planned one.
            _reads(store, experiment_id, job_id)
            answers[on] = _reads(store, experiment_id, job_id)
    assert answers[True] == answers[False]
    assert answers[True][1].trial.state is TrialState.RUNNING  # enums processed


def test_executor_plans_a_statement_on_its_second_run(pg: Engine) -> None:
    experiment_id, job_id = _seed(pg)
    stmt = text("SELECT id FROM jobs WHERE id = :j")
    with make_session_factory(pg).begin() as session:
        connection = session.connection()
        assert executor.plan_for(stmt, connection.dialect, {"j": job_id}) is None
        plan = executor.plan_for(stmt, connection.dialect, {"j": job_id})
        assert plan is not None
        assert executor.run(connection, plan, {"j": job_id}).scalar_one() == job_id
        assert executor.run(connection, plan, {"j": -1}).first() is None


def test_executor_raises_sqlalchemy_errors(pg: Engine) -> None:
    stmt = text("INSERT INTO trials_missing_table VALUES (:x)")
    with make_session_factory(pg).begin() as session:
        connection = session.connection()
        executor.plan_for(stmt, connection.dialect, {"x": 1})
        plan = executor.plan_for(stmt, connection.dialect, {"x": 1})
        assert plan is not None
        with pytest.raises(DBAPIError) as raised:
            executor.run(connection, plan, {"x": 1})
        assert "trials_missing_table" in str(raised.value)
        assert not raised.value.connection_invalidated
        session.rollback()
    # A foreign-key violation is SQLAlchemy's IntegrityError, as the store expects, both
    # through SQLAlchemy (first run) and on the cursor (second run).
    stmt = text(
        "INSERT INTO decisions (trial_id, kind, reason, step, created_at) "
        "VALUES (:t, 'stop', '{}', NULL, 1.0)"
    )
    for _ in range(2):
        with make_session_factory(pg)() as session:
            with pytest.raises(IntegrityError):
                open_store(session).execute(stmt, {"t": 10**6})
            session.rollback()


def test_executor_invalidates_a_connection_the_server_dropped(pg: Engine) -> None:
    experiment_id, _ = _seed(pg)
    factory = make_session_factory(pg)
    with factory() as session:
        session.begin()
        store = open_store(session)
        store.get_experiment(experiment_id)
        store.get_experiment(experiment_id)  # planned from now on
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pg.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(DBAPIError) as raised:
            store.get_experiment(experiment_id)
        assert raised.value.connection_invalidated  # the service retries on a new one
    with factory.begin() as session:  # the pool hands out a live connection again
        assert open_store(session).get_experiment(experiment_id).id == experiment_id


def test_record_step_takes_the_experiments_lock_when_asked(pg: Engine) -> None:
    experiment_id, job_id = _seed(pg)
    with make_session_factory(pg).begin() as session:
        store = open_store(session)
        job = store.get_job(job_id)
        report = Report(job.trial_id, job_id, 1, 0.5, {}, 3.0)
        bounds = StepBounds("hash", 3.0)
        judging = Judging(experiment_id, 0, 0)
        assert store.record_step(report, bounds, 50.0, judging=judging) is not None
        with pg.connect() as other, pytest.raises(DBAPIError) as raised:
            other.execute(
                text("SELECT id FROM experiments WHERE id = :e FOR UPDATE NOWAIT"),
                {"e": experiment_id},
            )
        assert "could not obtain lock" in str(raised.value)
        # ... and the locked read that follows is answered without a statement.
        assert store.get_experiment(experiment_id, lock=True).id == experiment_id
        assert store.cache.locked is None


def _settle_a_stop(store: SqlStore, experiment_id: int, job_id: int) -> None:
    """The job's trial gets a result at rung 0 and is stopped there (the job ends)."""
    job = store.get_job(job_id)
    trial = store.get_trial(job.trial_id)
    store.add_rung_result(experiment_id, RungResult(
        trial.bracket, 0, trial.number, trial.id, 0.5, 0.5, False, False, 3.0, 1
    ))
    record = DecisionRecord(trial.id, DecisionKind.STOP, {"rule": "test"}, 1, 4.0)
    stop = RungStop(experiment_id, job_id, 0, trial.bracket, 0, trial.number)
    store.settle_trial(record, 4.0, stop=stop, state=TrialState.STOPPED)


def test_a_stops_settle_leaves_the_experiment_for_the_claim_that_follows(pg: Engine) -> None:
    """After a stop's settle statement (which ends the job and refunds the experiment's
    resource), the claim's locked read of the experiment costs no statement."""
    experiment_id, job_id = _seed(pg)
    with make_session_factory(pg).begin() as session:
        store = open_store(session)
        _settle_a_stop(store, experiment_id, job_id)
        assert store.cache.locked is not None and store.cache.locked.id == experiment_id
        before = store.get_experiment(experiment_id)  # a statement: the cache is dropped
        assert store.cache.locked is None
        assert store.get_experiment(experiment_id, lock=True) == before


def test_a_plan_takes_its_result_columns_from_the_compiler(pg: Engine) -> None:
    """A statement derived with ``.returning()`` from one whose columns were read already
    reports stale ``exported_columns`` (SQLAlchemy 2.1); the plan must not trust them."""
    from tuner.storage.sql.postgres_writes import settle_trial_statement
    from tuner.storage.sql.statements import update_trial_statement
    from tuner.storage.sql.tables import TRIAL_COLUMNS

    columns = ("rung", "state", "updated_at")
    n_trial = len(TRIAL_COLUMNS)
    assert len(update_trial_statement(columns).exported_columns) == n_trial  # read: memoized
    stmt = settle_trial_statement(columns, True)
    with pg.connect() as connection:
        executor.plan_for(stmt, connection.dialect, {})
        plan = executor.plan_for(stmt, connection.dialect, {})
    assert plan is not None
    assert len(plan.columns) == n_trial + 1 + 9  # the trial, the closed result, the experiment


def _stop_and_read(store: SqlStore, experiment_id: int, job_id: int) -> tuple[Any, Any]:
    """A stop's settle with a claim to follow; what it read for the claim, and the same
    read made afterwards on its own."""
    from tuner.storage.sql.snapshot import COUNTERS_AND_QUEUED, counters_of

    store.claim_follows = True
    _settle_a_stop(store, experiment_id, job_id)
    read = store.cache.claim_read
    fresh = counters_of(store.execute(COUNTERS_AND_QUEUED[True], {"e_id": experiment_id}))
    return read, fresh


def test_a_stops_settle_reads_the_claims_counters_in_its_round_trip(db_url: str) -> None:
    """On the event loop's connection (psycopg's pipeline), the stop's settle and the
    claim's first read go together; the read sees the settle's writes (the rung it left),
    so it is what the claim would read on its own. Until both statements have plans, the
    settle may run alone."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.util import greenlet_spawn

    sync_engine = make_engine(db_url)
    seeds = [_seed(sync_engine) for _ in range(3)]
    sync_engine.dispose()

    async def main() -> list[tuple[Any, Any]]:
        engine = create_async_engine(db_url)

        def one(experiment_id: int, job_id: int) -> tuple[Any, Any]:
            with engine.sync_engine.begin() as connection:
                return _stop_and_read(store_on(connection), experiment_id, job_id)

        try:
            return [await greenlet_spawn(one, *seed) for seed in seeds]
        finally:
            await engine.dispose()

    results = asyncio.run(main())
    assert results[-1][0] is not None  # planned by then (the first may have run alone)
    for (experiment_id, _), (read, fresh) in zip(seeds, results, strict=True):
        rungs, _ = fresh[0]
        assert rungs[(0, 0)][:2] == (1, 1)  # one result at rung 0, and it left the rung
        if read is not None:
            assert read[0] == experiment_id and (read[1], read[2]) == fresh


def test_the_claims_read_is_dropped_by_any_statement(pg: Engine) -> None:
    """A read left by the settle (on a plain connection too, once the statements have
    plans) is valid only until the next statement, like the locked experiment."""
    experiment_id, job_id = _seed(pg)
    with make_session_factory(pg).begin() as session:
        store = open_store(session)
        _stop_and_read(store, experiment_id, job_id)
        store.cache.claim_read = (experiment_id, ({}, {}), None)
        store.get_experiment(experiment_id)
        assert store.cache.claim_read is None


def test_a_judging_report_reads_its_rung_after_the_lock(pg: Engine) -> None:
    """The rung's size and rank that a judging report reads with its writes are read once
    it holds the experiment's lock: a rung result that another transaction added while the
    report waited for the lock is counted (a read inside the locking statement would use the
    statement's earlier snapshot and miss it)."""
    import threading

    experiment_id, _ = _seed(pg)
    factory = make_session_factory(pg)
    with factory.begin() as session:
        store = open_store(session)
        jobs = []
        for i in range(3):
            _, job = store.start_trial(
                experiment_id, 0, {"lr": i}, f"j{i}", 2.0, rung=0, resource=1,
                lease=Lease("w", "hash", 60.0), reason={"rule": "test"},
            )
            jobs.append(job)

    def judged(job: Any, loss: float) -> tuple[int, Any]:
        """A judging report of ``job`` at rung 0; the rung's size and rank it read."""
        with factory.begin() as session:
            store = open_store(session)
            report = Report(job.trial_id, job.id, 1, loss, {}, 3.0)
            judging = Judging(experiment_id, 0, 0, loss, 10)
            assert store.record_step(report, StepBounds("hash", 3.0), 50.0, judging=judging)
            key = (experiment_id, 0, 0)
            return store.cache.rung_sizes[key], store.cache.ranks.get(key)

    assert judged(jobs[0], 0.5) == (0, (0.5, 10, 0))  # and the statements have plans now
    locked, release = threading.Event(), threading.Event()

    def other() -> None:  # holds the lock, adds a better result, commits
        with factory.begin() as session:
            store = open_store(session)
            store.get_experiment(experiment_id, lock=True)
            trial = store.get_trial(jobs[1].trial_id)
            store.add_rung_result(experiment_id, RungResult(
                0, 0, trial.number, trial.id, 0.1, 0.1, False, False, 3.0, 1
            ))
            locked.set()
            release.wait(30)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert locked.wait(30)
        threading.Timer(0.3, release.set).start()  # commits while the report waits
        size, rank = judged(jobs[2], 0.3)
    finally:
        release.set()
        thread.join(30)
    assert size == 1  # the other transaction's result, committed while this one waited
    assert rank == (0.3, 10, 1)
