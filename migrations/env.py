"""Alembic environment: the schema is ``tuner.storage.models.Base.metadata``.

Run programmatically by :func:`tuner.storage.database.upgrade` (which hands over an open
connection in ``config.attributes["connection"]``) or by ``alembic`` from the repository root
(the URL comes from ``TUNER_DATABASE_URL`` when set, else ``alembic.ini``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from tuner.storage.database import make_engine, normalize_url
from tuner.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    if connection is not None:
        dialect = connection.dialect.name
    else:
        dialect = normalize_url(url or "").get_backend_name()
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        literal_binds=connection is None,
    )


def _url() -> str:
    return os.environ.get("TUNER_DATABASE_URL") or config.get_main_option("sqlalchemy.url") or ""


def run_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
