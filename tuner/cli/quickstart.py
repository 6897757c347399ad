"""``tuner quickstart``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from tuner.cli.output import stdout


def quickstart(
    workers: Annotated[
        int | None, typer.Option(min=1, max=16, help="local worker agents (default 2-4)")
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="working folder: database, logs, checkpoints")
    ] = Path("tuner-quickstart"),
    budget: Annotated[
        str, typer.Option(help="'full' (about 3 minutes on 2 cores) or 'small' (CI, < 60 s)")
    ] = "full",
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="server port")] = None,
) -> None:
    """Try tuner on this machine in about 3 minutes.

    Starts a server (SQLite) and worker agents, tunes a small neural network on
    scikit-learn's digits with ASHA, and prints the best configuration. Ctrl-C stops
    everything it started.
    """
    from tuner.quickstart.run import default_workers
    from tuner.quickstart.run import quickstart as run_quickstart

    if budget not in ("full", "small"):
        raise typer.BadParameter("must be 'full' or 'small'", param_hint="--budget")
    chosen: Literal["full", "small"] = "full" if budget == "full" else "small"
    code = run_quickstart(
        directory,
        workers=workers or default_workers(),
        budget=chosen,
        port=port,
        console=stdout,
    )
    raise typer.Exit(code)
