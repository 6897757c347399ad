"""Commands that run or set up the service itself: server, db upgrade (tokens: tokens.py)."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer

from tuner.cli.options import DbOpt, VerboseOpt
from tuner.cli.output import stdout
from tuner.errors import TunerError

if TYPE_CHECKING:
    import uvicorn

DEFAULT_DB = "sqlite:///./tuner.db"

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (as uvicorn binds one), made before anything else so
    that a port in use costs nothing: no database, no admin token.

    Raises:
        TunerError: one sentence saying what to do (the port is in use, or not allowed).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TunerError(
                f"port {port} is in use: stop the other server or pick another with --port"
            ) from None
        raise TunerError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): pick another --host "
            "or --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def _announce_when_started(server: uvicorn.Server, host: str, port: int) -> None:
    """Print the banner once uvicorn has started (the schema upgraded, the app built, the
    socket listening): from then on the URL answers."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    shown = f"[{host}]" if ":" in host else host
    stdout.print(
        f"tuner server on http://{shown}:{port} (dashboard: http://{shown}:{port}/ui)"
    )


def server(
    host: Annotated[
        str, typer.Option(envvar="TUNER_HOST", help="address to listen on")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TUNER_PORT", min=1, max=65535)] = 8000,
    db: DbOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Run the API and the dashboard (uvicorn).

    Upgrades the database schema on start and prints its URL once it answers; a port in
    use is refused before anything is made (no database, no token). TUNER_ADMIN_TOKEN is
    an admin token (a new value revokes the previous value's token; unset, the first start
    prints a generated one); other settings come from TUNER_* variables
    (TUNER_REAPER_INTERVAL_S, TUNER_LOG_LEVEL...).
    """
    sock = listen(host, port)
    import uvicorn

    if db:
        os.environ["TUNER_DATABASE_URL"] = db
    if verbose:
        os.environ.setdefault("TUNER_LOG_LEVEL", "INFO" if verbose == 1 else "DEBUG")
    config = uvicorn.Config(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info" if verbose else "warning",
        access_log=verbose >= 2,
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    threading.Thread(
        target=_announce_when_started, args=(server, host, port), name="banner", daemon=True
    ).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


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
