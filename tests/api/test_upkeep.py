"""Table upkeep (api.upkeep) on a real PostgreSQL: a table that grew by more than half its
size is vacuumed and analyzed, once; one that changed a little is left to autovacuum."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from api import upkeep
from tests.conftest import DB_PARAMS
from tuner.storage.database import make_engine

POSTGRES_ONLY = DB_PARAMS[1]


@pytest.fixture
def pg(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def add_workers(engine: Engine, first: int, n: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO workers (id, host, gpus, cpus, slots, labels, created_at, "
                "last_seen_at, lost_leases) SELECT 'w' || i, 'host', '[]', 1, 1, '{}', 0, 0, 0 "
                "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS i"
            ),
            {"first": first, "last": first + n - 1},
        )
        connection.execute(text("SELECT pg_stat_force_next_flush()"))  # stats now


def analyzed(engine: Engine, table: str) -> tuple[int, int]:
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        row = connection.execute(
            text("SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": table},
        ).one()
    return int(row[0]), int(row[1])


@pytest.mark.parametrize("db_url", [POSTGRES_ONLY], indirect=True)
def test_a_table_that_grew_is_vacuumed_and_analyzed_once(pg: Engine) -> None:
    add_workers(pg, 0, upkeep.MIN_CHANGES - 1)
    assert upkeep.upkeep_once(pg) == []  # below the threshold: autovacuum's business
    add_workers(pg, upkeep.MIN_CHANGES, 1)
    assert [t.name for t in upkeep.due(pg)] == ["workers"]
    assert upkeep.upkeep_once(pg) == ["workers"]
    assert analyzed(pg, "workers") == (1, 1)
    assert upkeep.due(pg) == []  # analyzed: its changes count from zero again
    add_workers(pg, 2 * upkeep.MIN_CHANGES, upkeep.MIN_CHANGES - 1)
    assert upkeep.upkeep_once(pg) == []  # under half its size since then
    add_workers(pg, 3 * upkeep.MIN_CHANGES, upkeep.MIN_CHANGES)
    assert upkeep.upkeep_once(pg) == ["workers"]  # grew by half again
    assert analyzed(pg, "workers") == (2, 2)
