"""``Runtime.write_async``'s queues on PostgreSQL: the transactions of one experiment run at
most ``EXPERIMENT_SLOTS`` at a time, those of other experiments (or of none named) beside
them, up to the process's slots."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from api.deps import EXPERIMENT_SLOTS, Runtime
from api.settings import Settings
from tests.conftest import DB_PARAMS
from tuner.storage.database import make_engine, make_session_factory
from tuner.storage.sql import SqlStore

POSTGRES_ONLY = DB_PARAMS[1]


@pytest.mark.parametrize("db_url", [POSTGRES_ONLY], indirect=True)
def test_transactions_of_one_experiment_run_two_at_a_time(db_url: str) -> None:
    active: Counter[int | None] = Counter()
    peak: Counter[int | None] = Counter()
    most_at_once = 0

    def hold(key: int | None) -> object:
        def fn(store: SqlStore) -> None:
            nonlocal most_at_once
            active[key] += 1
            peak[key] = max(peak[key], active[key])
            most_at_once = max(most_at_once, sum(active.values()))
            try:  # a round trip: the event loop runs the others meanwhile
                store.session.execute(text("SELECT pg_sleep(0.05)"))
            finally:
                active[key] -= 1

        return fn

    async def run() -> None:
        engine = make_engine(db_url)
        runtime = Runtime(
            settings=Settings(database_url=db_url), engine=engine,
            session_factory=make_session_factory(engine),
            read_factory=make_session_factory(engine, read_only=True), clock=time.time,
        )
        runtime.async_engine = create_async_engine(engine.url, pool_size=8, max_overflow=0)
        runtime.async_slots = asyncio.Semaphore(8)
        keys: list[int | None] = [1] * 6 + [2] * 6 + [None] * 4
        try:
            await asyncio.gather(*(
                runtime.write_async("test", hold(key), key)  # type: ignore[arg-type]
                for key in keys
            ))
        finally:
            await runtime.async_engine.dispose()
            engine.dispose()

    asyncio.run(run())
    assert peak[1] == peak[2] == EXPERIMENT_SLOTS
    assert peak[None] > EXPERIMENT_SLOTS  # no experiment named: only the process's slots
    assert most_at_once == 8
