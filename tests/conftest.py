"""Shared test resources: databases and stores.

- ``db_url``: a FRESH migrated database per test, parametrized ``sqlite`` (always) and
  ``postgres`` (when ``TUNER_TEST_POSTGRES_URL`` is set, marked ``postgres``). SQLite copies a
  template file migrated once per session; PostgreSQL creates ``tuner_test_<hex>`` from a
  template database migrated once per session, and drops it (``WITH (FORCE)``) afterwards.
- ``engine`` / ``session_factory``: over ``db_url``.
- ``store_factory``: parametrized ``memory``, ``sqlite``, ``postgres``; ``with
  store_factory() as store:`` runs one transaction (commit on success, rollback on error)
  over a :class:`tuner.storage.sql.SqlStore`, or hands out the test's one ``MemoryStore``.

Hypothesis profiles: ``ci`` (derandomized) and ``dev``; pick one with
``--hypothesis-profile=ci`` or ``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tuner.storage.database import make_engine, make_session_factory, normalize_url, upgrade

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

POSTGRES_ENV = "TUNER_TEST_POSTGRES_URL"
_PG_URL = os.environ.get(POSTGRES_ENV)

DB_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not _PG_URL, reason=f"{POSTGRES_ENV} is not set"),
        ],
    ),
]
STORE_PARAMS = [pytest.param("memory", id="memory"), *DB_PARAMS]

StoreFactory = Callable[[], AbstractContextManager[Any]]


# ---- templates (once per session) -----------------------------------------------------------
@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, copied by every SQLite test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    # Fold the WAL into the main file so that one file copy is the whole database.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path


def _pg_admin() -> Engine:
    assert _PG_URL is not None
    return make_engine(_PG_URL, isolation_level="AUTOCOMMIT", poolclass=_null_pool())


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def _pg_url_for(database: str) -> str:
    assert _PG_URL is not None
    return normalize_url(_PG_URL).set(database=database).render_as_string(hide_password=False)


def _drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated to head, used as ``TEMPLATE`` by every postgres test.

    Named per session (``tuner_template_<hex>``) so that concurrent test runs against the same
    server do not drop each other's template; dropped at session end.
    """
    if not _PG_URL:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    name = f"tuner_template_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin()
    _drop_database(admin, name)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(_pg_url_for(name))
        yield name
    finally:
        _drop_database(admin, name)
        admin.dispose()


# ---- fresh databases (one per test) ----------------------------------------------------------
def _fresh_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "tuner.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    if kind == "postgres":
        template_name: str = request.getfixturevalue("postgres_template")
        name = f"tuner_test_{uuid.uuid4().hex[:16]}"
        admin = _pg_admin()
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
        try:
            yield _pg_url_for(name)
        finally:
            _drop_database(admin, name)
            admin.dispose()
        return
    raise ValueError(f"unknown database kind {kind!r}")


@pytest.fixture(params=DB_PARAMS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, migrated, empty database."""
    yield from _fresh_database(request.param, request, tmp_path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


# ---- stores ----------------------------------------------------------------------------------
@contextmanager
def sql_transaction(factory: sessionmaker[Session]) -> Iterator[Any]:
    """One transaction over a SqlStore: commit on success, roll back on error."""
    from tuner.storage.sql import open_store

    with factory() as session, session.begin():
        store = open_store(session)
        yield store
        store.flush()  # as the service does before its commits (its checks included)


@pytest.fixture(params=STORE_PARAMS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store_factory(
    store_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreFactory]:
    """``with store_factory() as store:`` is one transaction of the parametrized store."""
    if store_kind == "memory":
        from tuner.storage.memory import MemoryStore

        memory = MemoryStore()

        @contextmanager
        def memory_transaction() -> Iterator[Any]:
            yield memory

        yield memory_transaction
        return
    url_iter = _fresh_database(store_kind, request, tmp_path)
    url = next(url_iter)
    eng = make_engine(url)
    factory = make_session_factory(eng)
    try:
        yield lambda: sql_transaction(factory)
    finally:
        eng.dispose()
        for _ in url_iter:  # run the database's teardown
            pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make a postgres-parametrized test carry the ``postgres`` mark for ``-m`` selection."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "postgres" in callspec.id.split("-"):
            item.add_marker(pytest.mark.postgres)
