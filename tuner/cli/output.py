"""How the ``tuner`` command speaks: rich consoles, and expected errors as one sentence that
says what to do (never a traceback)."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.markup import escape

from tuner.errors import AuthError, ClientError, ConfigError, Forbidden, NotFound, TunerError

# soft_wrap: a line longer than the terminal (or than 80 columns through a pipe) is not
# broken in the middle of a command or a path that the user is told to copy.
stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def explain(error: TunerError) -> str:
    """The error's sentence, with what to do about it."""
    detail = error.detail
    if isinstance(error, Forbidden):
        return f"{detail}: use a token with that role (--token or TUNER_TOKEN)"
    if isinstance(error, AuthError):
        return (
            f"the server refused the token ({detail}): pass a valid one with --token or "
            "TUNER_TOKEN (an admin can make one with `tuner token create --role admin`)"
        )
    if isinstance(error, ConfigError):
        return f"invalid: {detail}"
    if isinstance(error, NotFound):
        return f"not found: {detail}"
    if isinstance(error, ClientError):
        return detail
    return detail


def print_error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}")


def configure_logging(verbosity: int) -> None:
    """Quiet by default (warnings); INFO with -v, DEBUG with -vv; key=value lines on stderr."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger("tuner")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbosity < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)
