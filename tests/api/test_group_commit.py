"""Group commit (api.group_commit): the queueing itself with a runner that records what it is
given, then ``Writer.write_async`` over real PostgreSQL transactions: one transaction per
group, members in order and seeing each other's writes, a failing member run alone."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from api.group_commit import GroupCommit, Member
from api.metrics import Metrics
from api.writer import MAX_GROUP, Writer
from tests.conftest import DB_PARAMS
from tuner.storage.database import make_engine, make_session_factory
from tuner.storage.sql import SqlStore

POSTGRES_ONLY = DB_PARAMS[1]


class Recorder:
    """A runner that answers each member with its own label after a pause, recording the
    groups it ran and how many of one experiment's groups ran at once."""

    def __init__(self, pause_s: float = 0.01, fail_on: str | None = None) -> None:
        self.pause_s, self.fail_on = pause_s, fail_on
        self.groups: list[list[str]] = []
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    async def __call__(self, members: list[Member]) -> None:
        labels = [m.fn(None) for m in members]  # type: ignore[arg-type]
        experiment = labels[0].split(":")[0]
        self.groups.append(labels)
        self.active[experiment] += 1
        self.peak[experiment] = max(self.peak[experiment], self.active[experiment])
        try:
            await asyncio.sleep(self.pause_s)
            if self.fail_on in labels:
                raise RuntimeError("the runner broke")
            for member, label in zip(members, labels, strict=True):
                member.settle(label)
        finally:
            self.active[experiment] -= 1


def label(text_: str) -> Any:
    return lambda _store: text_


def test_waiting_transactions_run_in_groups_in_arrival_order() -> None:
    recorder = Recorder()

    async def run() -> list[str]:
        groups = GroupCommit(recorder, slots=2, max_group=4)
        first = asyncio.create_task(groups.submit(1, "report", label("1:a")))
        await asyncio.sleep(0.001)  # "1:a" runs alone; the next ones queue behind it
        rest = [groups.submit(1, "report", label(f"1:{i}")) for i in range(10)]
        return [await first, *await asyncio.gather(*rest)]

    answers = asyncio.run(run())
    assert answers == ["1:a", *(f"1:{i}" for i in range(10))]  # each its own answer
    assert recorder.groups[0] == ["1:a"]
    flat = [x for group in recorder.groups for x in group]
    assert flat == answers  # every member once, in the order they came
    assert max(len(g) for g in recorder.groups) == 4  # max_group
    assert len(recorder.groups) < len(answers)  # grouped, not one by one
    assert recorder.peak["1"] == 2  # slots: groups of one experiment in flight at once


def test_other_experiments_run_beside_and_the_queues_are_forgotten() -> None:
    recorder = Recorder(pause_s=0.05)

    async def run() -> tuple[float, GroupCommit]:
        groups = GroupCommit(recorder, slots=1, max_group=MAX_GROUP)
        start = time.perf_counter()
        await asyncio.gather(*(
            groups.submit(e, "claim", label(f"{e}:{i}")) for e in range(5) for i in range(3)
        ))
        return time.perf_counter() - start, groups

    elapsed, groups = asyncio.run(run())
    # Five experiments, one group each at a time: about one pause for the first member of
    # each and one for the rest, not fifteen pauses.
    assert elapsed < 0.05 * 6
    assert sorted(recorder.peak.values()) == [1] * 5
    assert not groups._queues  # idle experiments leave no queue behind


def test_a_caller_that_left_is_skipped_and_a_broken_runner_fails_its_members() -> None:
    recorder = Recorder(pause_s=0.02, fail_on="1:broken")

    async def run() -> list[Any]:
        groups = GroupCommit(recorder, slots=1, max_group=MAX_GROUP)
        busy = asyncio.create_task(groups.submit(1, "report", label("1:busy")))
        await asyncio.sleep(0.001)
        left = asyncio.create_task(groups.submit(1, "report", label("1:left")))
        broken = asyncio.create_task(groups.submit(1, "report", label("1:broken")))
        await asyncio.sleep(0.001)
        left.cancel()  # its request was cancelled while it waited
        return list(await asyncio.gather(busy, left, broken, return_exceptions=True))

    busy, left, broken = asyncio.run(run())
    assert busy == "1:busy"
    assert isinstance(left, asyncio.CancelledError)
    assert isinstance(broken, RuntimeError)  # settled with the runner's error, not hung
    assert recorder.groups == [["1:busy"], ["1:broken"]]  # "1:left" never ran


@pytest.fixture
def writer(db_url: str) -> Iterator[Writer]:
    engine = make_engine(db_url)
    yield Writer(engine, make_session_factory(engine), Metrics(), concurrency=8)
    engine.dispose()
    with make_engine(db_url).begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS probe"))


def on_the_loop(writer: Writer, *calls: tuple[str, Any, int | None]) -> list[Any]:
    """Run ``write_async`` calls at once on an event loop, as the app's lifespan sets it up."""

    async def run() -> list[Any]:
        await writer.start_async()
        try:
            return list(await asyncio.gather(
                *(writer.write_async(op, fn, key) for op, fn, key in calls),
                return_exceptions=True,
            ))
        finally:
            await writer.stop_async()

    return asyncio.run(run())


def transaction_id(store: SqlStore) -> int:
    store.session.execute(text("SELECT pg_sleep(0.02)"))  # a round trip: the others queue
    return int(store.session.scalar(text("SELECT txid_current()")))


@pytest.mark.parametrize("db_url", [POSTGRES_ONLY], indirect=True)
def test_one_experiments_queued_transactions_commit_as_one(writer: Writer) -> None:
    calls = [("report", transaction_id, key) for key in [1] * 6 + [2] * 6 + [None] * 4]
    txids = on_the_loop(writer, *calls)
    by_key: dict[int | None, set[int]] = {}
    for (_, _, key), txid in zip(calls, txids, strict=True):
        by_key.setdefault(key, set()).add(txid)
    assert len(by_key[1]) < 6  # grouped: fewer transactions than calls
    assert len(by_key[2]) < 6
    assert by_key[1].isdisjoint(by_key[2])  # never two experiments in one transaction
    assert len(by_key[None]) == 4  # no experiment named: a transaction each
    groups = writer.metrics.write_groups.collect()[0].samples
    assert any(s.name.endswith("_count") and s.value >= 2 for s in groups)


@pytest.mark.parametrize("db_url", [POSTGRES_ONLY], indirect=True)
def test_members_see_earlier_writes_and_a_failing_member_runs_alone(writer: Writer) -> None:
    with writer.engine.begin() as connection:
        connection.execute(text("CREATE TABLE probe (k text PRIMARY KEY)"))

    def insert(k: str, *, fail: bool = False) -> Any:
        def fn(store: SqlStore) -> list[str]:
            store.session.execute(text("SELECT pg_sleep(0.02)"))
            store.session.execute(text("INSERT INTO probe VALUES (:k)"), {"k": k})
            if fail:
                raise ValueError(f"{k}: the member's own error")
            return sorted(store.session.scalars(text("SELECT k FROM probe")))

        return fn

    answers = on_the_loop(
        writer,
        ("report", insert("a"), 7),  # alone: the others queue behind it
        ("report", insert("b"), 7),
        ("report", insert("c", fail=True), 7),
        ("report", insert("d"), 7),
    )
    assert answers[0] == ["a"]
    assert answers[1] == ["a", "b"]
    assert isinstance(answers[2], ValueError)  # the caller's error, as without groups
    assert answers[3] == ["a", "b", "d"]  # nothing of the failed member
    with writer.engine.connect() as connection:
        assert sorted(connection.scalars(text("SELECT k FROM probe"))) == ["a", "b", "d"]
