"""``tuner token create | list | revoke``.

They go through the API of a server (``--server``/``TUNER_URL``, default the local one, with
an admin ``--token``/``TUNER_TOKEN``), like every other command. Only ``--database URL``,
given on the command line, makes them work on a database directly (to make an admin token
when none is known, or to revoke one with no server running); that database must exist and
have tuner's schema, so a mistyped path never makes a new empty database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tuner.cli.options import DEFAULT_SERVER, TokenOpt, connect
from tuner.cli.output import stderr, stdout
from tuner.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tuner.storage.queries import TokenInfo
    from tuner.wire import TokenInfoOut

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)

#: Like ``ServerOpt`` but without a default, so that naming both it and --database is caught.
ServerOrNone = Annotated[
    str | None,
    typer.Option(
        "--server", "--url", envvar="TUNER_URL", show_envvar=True,
        help=f"URL of the tuner server (default: {DEFAULT_SERVER})",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database", "--db",
        help="work on this database directly, not through a server (it must exist and have "
        "tuner's schema; no environment variable sets it)",
    ),
]
TokenIdArg = Annotated[int, typer.Argument(help="token id (see `tuner token list`)", min=1)]


def _local(ctx: typer.Context, server: str | None, database: str | None) -> str | None:
    """The database to work on directly, or None: go through the server. --server and
    --database together are a usage error; TUNER_URL is ignored when --database is given."""
    source = ctx.get_parameter_source("server")
    if database is not None and server is not None and source is not None and (
        source.name == "COMMANDLINE"
    ):
        raise typer.BadParameter("give --server or --database, not both", param_hint="--database")
    return database


@contextmanager
def _existing_database(url: str) -> Iterator[Session]:
    """One transaction on an existing tuner database; never creates nor upgrades one."""
    from sqlalchemy import inspect

    from tuner.storage.database import make_engine, make_session_factory, normalize_url

    parsed = normalize_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:") or not Path(path).is_file():
            raise ConfigError(
                f"--database {shown}: there is no database file {path!r}; name an existing "
                "one (its server's --db), or make one with `tuner db upgrade --db URL`"
            )
    engine = make_engine(parsed)
    try:
        if not inspect(engine).has_table("tokens"):
            raise ConfigError(
                f"--database {shown} has no tuner schema (no tokens table): run "
                "`tuner db upgrade --db URL`, or start `tuner server --db URL` once"
            )
        with make_session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def _info_out(info: TokenInfo) -> TokenInfoOut:
    from tuner.wire import TokenInfoOut  # pydantic models: loaded when a command runs

    revoked_at = info.revoked_at
    return TokenInfoOut(
        id=info.id, name=info.name, role=info.role,
        created_at=datetime.fromtimestamp(info.created_at, tz=UTC),
        revoked_at=None if revoked_at is None else datetime.fromtimestamp(revoked_at, tz=UTC),
        active=info.active,
    )


def _describe(info: TokenInfoOut) -> str:
    return f"token {info.id} ({escape(info.name)}, {info.role})"


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option(help="admin, worker or viewer")],
    name: Annotated[str | None, typer.Option(help="what the token is for")] = None,
    server: ServerOrNone = None,
    token: TokenOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Create an API token and print it (shown only this once)."""
    name = name or f"{role} token (cli)"
    if (local := _local(ctx, server, database)) is not None:
        from tuner.tokens import create_token

        with _existing_database(local) as session:
            text = create_token(session, role, name)
        about = f"a {role} token named {name!r}"
    else:
        with connect(server or DEFAULT_SERVER, token) as client:
            made = client.create_token(role, name)
        text = made.token
        about = (
            f"token {made.id}, a {role} token named {made.name!r} "
            f"(`tuner token revoke {made.id}` ends it)"
        )
    typer.echo(text)  # alone on stdout, for TOKEN=$(tuner token create ...)
    stderr.print(f"made {escape(about)}; it is shown only this once: store it now")


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    include_revoked: Annotated[
        bool, typer.Option("--all", "-a", help="revoked tokens too")
    ] = False,
    server: ServerOrNone = None,
    token: TokenOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """List API tokens (never their text): active ones, or every one with --all."""
    if (local := _local(ctx, server, database)) is not None:
        from tuner.tokens import list_tokens

        with _existing_database(local) as session:
            items = [_info_out(i) for i in list_tokens(session, include_revoked=include_revoked)]
    else:
        with connect(server or DEFAULT_SERVER, token) as client:
            items = client.list_tokens(include_revoked=include_revoked).items
    table = Table("id", "name", "role", "created", "revoked", box=None)
    for item in items:
        table.add_row(
            str(item.id), escape(item.name), item.role, _when(item.created_at),
            _when(item.revoked_at) if item.revoked_at else "-",
        )
    stdout.print(table)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: TokenIdArg,
    server: ServerOrNone = None,
    token: TokenOpt = None,
    database: DatabaseOpt = None,
) -> None:
    """Revoke an API token (revoking it again changes nothing).

    The server refuses it from its next request, other replicas within 10 s (the time they
    trust a verified token). A token may revoke itself; the last active admin token cannot
    be revoked: create another admin token first."""
    if (local := _local(ctx, server, database)) is not None:
        from tuner.tokens import revoke_token

        with _existing_database(local) as session:
            info = _info_out(revoke_token(session, token_id, time.time()))
        note = " (running servers refuse it within 10 s)"
    else:
        with connect(server or DEFAULT_SERVER, token) as client:
            info = client.revoke_token(token_id)
        note = ""
    since = _when(info.revoked_at) if info.revoked_at else "?"
    stdout.print(f"{_describe(info)} is revoked since {since}{note}")


def _when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
