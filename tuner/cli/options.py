"""Options shared by the commands that talk to a server."""

from __future__ import annotations

from typing import Annotated

import typer

from tuner.client import DEFAULT_URL, Client, RetryPolicy

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

DEFAULT_SERVER = DEFAULT_URL


#: A command line answers quickly when the server is down: a couple of quick retries only.
CLI_RETRY = RetryPolicy(attempts=3, base_delay_s=0.2, max_delay_s=1.0)


def connect(server: str, token: str | None) -> Client:
    return Client(server, token or "", retry=CLI_RETRY)
