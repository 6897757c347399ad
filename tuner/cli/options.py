"""Options shared by the commands that talk to a server."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the SDK (httpx, the wire models) loads when a command connects
    from tuner.client import Client

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        "--url",
        envvar="TUNER_URL",
        show_envvar=True,
        help="URL of the tuner server",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="TUNER_TOKEN", show_envvar=True, help="API token"),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TUNER_DATABASE_URL",
        show_envvar=True,
        help="database URL (sqlite:///path.db or postgresql+psycopg://...)",
    ),
]
VerboseOpt = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="log more (-v INFO, -vv DEBUG)")
]

#: ``tuner.client.DEFAULT_URL``, written out so that ``--help`` need not load the SDK
#: (tests/cli/test_startup.py checks that the two agree).
DEFAULT_SERVER = "http://127.0.0.1:8000"


def connect(server: str, token: str | None) -> Client:
    """A client for one command: it answers quickly when the server is down (a couple of
    quick retries only)."""
    from tuner.client import Client, RetryPolicy

    retry = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=1.0)
    return Client(server, token or "", retry=retry)
