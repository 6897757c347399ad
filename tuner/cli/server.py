"""Commands that run or set up the service itself: server, db upgrade (tokens: tokens.py)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tuner.cli.options import DbOpt, VerboseOpt
from tuner.cli.output import stdout

DEFAULT_DB = "sqlite:///./tuner.db"

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def server(
    host: Annotated[
        str, typer.Option(envvar="TUNER_HOST", help="address to listen on")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TUNER_PORT", min=1, max=65535)] = 8000,
    db: DbOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Run the API and the dashboard (uvicorn).

    Upgrades the database schema on start. TUNER_ADMIN_TOKEN is an admin token (a new value
    revokes the previous value's token; unset, the first start prints a generated one);
    other settings come from TUNER_* variables (TUNER_REAPER_INTERVAL_S, TUNER_LOG_LEVEL...).
    """
    import uvicorn

    if db:
        os.environ["TUNER_DATABASE_URL"] = db
    if verbose:
        os.environ.setdefault("TUNER_LOG_LEVEL", "INFO" if verbose == 1 else "DEBUG")
    stdout.print(f"tuner server on http://{host}:{port} (dashboard: http://{host}:{port}/ui)")
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info" if verbose else "warning",
        access_log=verbose >= 2,
        timeout_graceful_shutdown=3,
    )


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None) -> None:
    """Upgrade the database schema to the newest revision (Alembic)."""
    from tuner.storage.database import upgrade

    url = db or DEFAULT_DB
    upgrade(url)
    stdout.print(f"database is up to date: {_redact(url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
