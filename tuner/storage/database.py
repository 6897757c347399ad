"""Engines, sessions and schema upgrades.

SQLite (the default, one file) runs in WAL mode with foreign keys on, and every transaction
of a writing session starts with ``BEGIN IMMEDIATE``: it takes the database's write lock
up front, so two deciders never interleave (``get_experiment(lock=True)`` is then already
serialised) and no transaction fails half-way with "database is locked" when it upgrades from
reading to writing. Read-only sessions (:func:`make_session_factory` with ``read_only=True``)
start with a plain deferred ``BEGIN`` and never wait for writers (WAL).

PostgreSQL (``postgresql+psycopg://``) serves several server processes; locking is by rows
(see :mod:`tuner.storage.sql`).
"""

from __future__ import annotations

import site
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_URL = "sqlite:///./tuner.db"

#: Seconds a SQLite connection waits for the write lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30.0

#: Execution option naming how a SQLite transaction begins (``IMMEDIATE`` or ``DEFERRED``).
_BEGIN_OPTION = "tuner_sqlite_begin"

T = TypeVar("T")

def _migrations_dir() -> Path:
    """Where the Alembic environment and revisions live: the repository's ``migrations/``
    beside the package (a checkout, an editable install, the Docker image), or else the copy
    that a wheel installed under ``<prefix>/share/tuner/migrations`` (pyproject.toml's
    data-files), for the interpreter's prefix or the user's (``pip install --user``)."""
    beside = Path(__file__).resolve().parents[2] / "migrations"
    if (beside / "env.py").is_file():
        return beside
    for prefix in (sys.prefix, site.getuserbase()):
        installed = Path(prefix) / "share" / "tuner" / "migrations"
        if (installed / "env.py").is_file():
            return installed
    return beside  # Alembic's error then names the path it looked for


#: Where the Alembic environment and revisions live (see _migrations_dir).
MIGRATIONS_DIR = _migrations_dir()


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` and ``postgres://`` URLs get the psycopg 3 driver."""
    if isinstance(url, str) and url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def driver_conninfo(url: str | URL) -> str:
    """A PostgreSQL URL as the driver itself takes it (``postgresql://...``, no SQLAlchemy
    driver name), for connections made without SQLAlchemy (a psycopg pool)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def is_sqlite(engine_or_url: Engine | str | URL) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else normalize_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def make_engine(url: str | URL = DEFAULT_URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` (SQLite file or PostgreSQL), configured as the module says.

    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        # No pre-ping: it costs a round trip on every checkout. A connection that a
        # PostgreSQL restart broke fails its first statement instead; SQLAlchemy then
        # invalidates it (``connection_invalidated``) and the service retries the
        # transaction on a fresh one (``api.writer.is_transient``).
        kwargs.setdefault("pool_pre_ping", False)
        return create_engine(parsed, **kwargs)
    raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite or postgresql")


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout, foreign keys, and BEGIN IMMEDIATE (the pysqlite recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from emitting its own BEGIN; the "begin" listener below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions over ``engine``; the caller owns each transaction (``with factory.begin():``).

    ``read_only=True`` (SQLite) begins transactions DEFERRED: they read a consistent WAL
    snapshot without taking the write lock. A write in such a session may fail with
    "database is locked"; use it for the dashboard and list endpoints only.
    """
    bind = engine
    if read_only and is_sqlite(engine):
        bind = engine.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=True)


def read_once_more_if_dead(
    factory: sessionmaker[Session],
    fn: Callable[[Session], T],
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``fn`` in one transaction of ``factory``; once more, on a fresh connection, if
    the pooled one turned out dead (a restarted database, a terminated backend: SQLAlchemy
    then drops every pooled connection older than the failure). For reads; writes have
    their own retries (:mod:`api.writer`)."""
    for attempt in (1, 2):
        try:
            with factory.begin() as session:
                return fn(session)
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
            if on_retry is not None:
                on_retry()
    raise AssertionError("unreachable")  # pragma: no cover


def alembic_config(url: str | URL, connection: Any = None) -> Any:
    """An :class:`alembic.config.Config` for ``url`` that works from any working directory."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    rendered = normalize_url(url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """One transaction for a migration run. On SQLite, with foreign keys off while it runs:
    batch mode rebuilds a table (create a copy, copy the rows, DROP the old one, rename),
    and with foreign keys on, that DROP deletes every row that refers to the old table
    through ON DELETE CASCADE (Alembic's batch documentation says to turn them off). The
    keys are checked before the commit (a violation rolls the migration back) and turned
    on again for the pooled connection."""
    with engine.connect() as connection:
        sqlite = is_sqlite(engine)
        raw: Any = connection.connection.driver_connection
        if sqlite:  # outside any transaction: SQLite ignores this PRAGMA inside one
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(
                            f"the migration left rows whose foreign keys point nowhere: "
                            f"{broken[:5]} (rolled back; report this as a bug)"
                        )
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision`` (Alembic), creating the SQLite file if needed."""
    from alembic import command

    engine = make_engine(url)
    try:
        with _migrating(engine) as connection:
            command.upgrade(alembic_config(url, connection), revision)
    finally:
        engine.dispose()


def downgrade(url: str | URL, revision: str) -> None:
    """Take the schema at ``url`` back to ``revision`` (``"base"`` drops everything)."""
    from alembic import command

    engine = make_engine(url)
    try:
        with _migrating(engine) as connection:
            command.downgrade(alembic_config(url, connection), revision)
    finally:
        engine.dispose()


def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at, or None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rev: str | None = MigrationContext.configure(connection).get_current_revision()
            return rev
    finally:
        engine.dispose()
