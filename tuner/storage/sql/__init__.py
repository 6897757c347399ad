"""The SQL store: SQLite or PostgreSQL behind one :class:`tuner.store.Store`.

One concept per module:

| module | what it is |
| --- | --- |
| ``tables`` | the tables, the column lists of the hot reads, rows <-> domain values |
| ``guards`` | the SQL form of the job protocol's rules (:mod:`tuner.protocol`) |
| ``ranking`` | the SQL form of the trials' ranking (:mod:`tuner.ranking`) |
| ``statements`` | the prebuilt statements both dialects run |
| ``postgres_writes`` | PostgreSQL's multi-statement writes merged into one statement each |
| ``executor`` | how statements run (the only module that touches SQLAlchemy's internals) |
| ``cache`` | what one transaction's store remembers between its statements |
| ``snapshot`` | the scheduler's read interface over the rung tables |
| ``store`` | :class:`SqlStore`: the store, one statement at a time (SQLite) |
| ``postgres`` | :class:`PostgresStore`: the same, with merged writes (PostgreSQL) |

:func:`open_store` and :func:`store_on` pick the class for the database.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from tuner.storage.sql.executor import Executor
from tuner.storage.sql.postgres import PostgresStore
from tuner.storage.sql.store import SqlStore

__all__ = ["PostgresStore", "SqlStore", "open_store", "store_on"]


def _store_for(executor: Executor) -> SqlStore:
    return PostgresStore(executor) if executor.is_postgres else SqlStore(executor)


def open_store(session: Session) -> SqlStore:
    """The store of the transaction that ``session`` runs (its caller owns it, and calls
    :meth:`SqlStore.flush` before the commit)."""
    return _store_for(Executor(session=session))


def store_on(connection: Connection) -> SqlStore:
    """The store of ``connection``'s transaction, which the caller began and ends: no ORM
    Session unless a caller asks for :attr:`SqlStore.session`. Call :meth:`SqlStore.flush`
    before the commit."""
    return _store_for(Executor(connection=connection))
