"""Table upkeep on PostgreSQL: VACUUM and ANALYZE the service's tables while they grow fast.

An experiment that starts on an empty database adds thousands of rows a second, and
PostgreSQL's autovacuum looks at a table once a minute at most (``autovacuum_naptime``),
after a fifth of it changed. Until then the planner plans on an empty table's statistics,
and a prepared statement's generic plan (psycopg prepares a statement on its fifth run)
keeps what it chose then: a scan of every trial of the experiment for a lookup by its
parameters, once. Nor does anything mark pages all-visible, so the stopping test's rank
(an index range count, ``tuner.storage.sql.snapshot``) reads the table for every entry it
counts. Over the first 40 s of the benchmark, reports per second fell by half
(docs/PERFORMANCE.md).

So a thread in every server process on PostgreSQL looks at ``pg_stat_user_tables`` every
``upkeep_interval_s`` and runs ``VACUUM (ANALYZE)`` on each of the service's tables that
changed by more than half its size (and by at least :data:`MIN_CHANGES` rows) since it was
last analyzed: a growing table is done again at each half of growth, a few times in all,
and a settled one is left to autovacuum. ANALYZE invalidates the cached plans, which are
made again on the new statistics. ``SKIP_LOCKED`` leaves a table to the replica already at
it, ``TRUNCATE false`` keeps VACUUM from waiting for an exclusive lock to shorten a table.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, text

log = logging.getLogger(__name__)

#: The service's tables that the job protocol writes.
TABLES = (
    "experiments", "brackets", "rungs", "trials", "jobs", "reports", "rung_results",
    "decisions", "workers",
)
#: Fewer changed rows than this never call for upkeep (autovacuum's own threshold is 50).
MIN_CHANGES = 1000
#: ... nor fewer than this share of the table's live rows.
SHARE = 0.5

_STATS = text(
    "SELECT relname, n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables "
    "WHERE schemaname = current_schema() AND relname IN :names"
).bindparams(bindparam("names", expanding=True))


@dataclass(frozen=True)
class TableStats:
    name: str
    live: int
    changed: int  # rows inserted, updated or deleted since the last ANALYZE

    def needs_upkeep(self) -> bool:
        return self.changed >= max(MIN_CHANGES, SHARE * self.live)


def due(engine: Engine) -> list[TableStats]:
    """The service's tables that call for upkeep now."""
    with engine.connect() as connection:
        rows = connection.execute(_STATS, {"names": list(TABLES)}).all()
    stats = [TableStats(str(name), int(live), int(changed)) for name, live, changed in rows]
    return [table for table in stats if table.needs_upkeep()]


def upkeep_once(engine: Engine, stop: threading.Event | None = None) -> list[str]:
    """VACUUM (ANALYZE) the tables that call for it (until ``stop`` is set); their names."""
    done: list[str] = []
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    for table in due(engine):
        if stop is not None and stop.is_set():
            break
        start = time.perf_counter()
        with autocommit.connect() as connection:
            # The name is one of TABLES (a constant), never input.
            connection.execute(
                text(f"VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) {table.name}")
            )
        done.append(table.name)
        log.info(
            "event=table_upkeep table=%s live_rows=%d changed_rows=%d ms=%.0f",
            table.name, table.live, table.changed, 1000 * (time.perf_counter() - start),
        )
    return done
