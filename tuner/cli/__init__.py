"""The ``tuner`` command (typer + rich). ``main`` is the console script's entry point.

Expected errors (unreachable server, refused token, invalid document...) print one sentence
saying what to do and exit 1; usage errors exit 2; Ctrl-C exits 130. No tracebacks for them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from tuner.cli import experiments, server, tokens, worker
from tuner.cli.output import explain, print_error
from tuner.cli.quickstart import quickstart
from tuner.errors import TunerError

app = typer.Typer(
    name="tuner",
    help="Hyperparameter tuning as a service: successive halving, Hyperband, ASHA, PASHA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("server")(server.server)
app.command(
    "worker",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)(worker.worker)
app.command("submit")(experiments.submit)
app.command("ls")(experiments.ls)
app.command("show")(experiments.show)
app.command("pause")(experiments.pause)
app.command("resume")(experiments.resume)
app.command("cancel")(experiments.cancel)
app.command("stop-trial")(experiments.stop_trial)
app.command("export")(experiments.export)
app.command("schema")(experiments.schema)
app.command("quickstart")(quickstart)
app.add_typer(server.db_app, name="db")
app.add_typer(tokens.token_app, name="token")


@app.command(
    "simulate",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
def simulate(
    args: Annotated[
        list[str] | None, typer.Argument(help="EXPERIMENT.yaml --workers N [options]")
    ] = None,
) -> None:
    """Simulate an experiment on virtual workers (`tuner simulate --help` for its options)."""
    # The simulator (numpy, the coordinator, the in-memory store) loads only for this
    # command: `tuner --help` and `tuner show` stay quick. Its own command parses the rest.
    try:
        from tuner.simulate.cli import app as simulate_app
    except ImportError as exc:  # the simulator is optional at import time
        raise TunerError(f"the simulator is not available: {exc}") from None
    command = typer.main.get_command(simulate_app)
    command.main(args=list(args or []), prog_name="tuner simulate", standalone_mode=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line; exit 0, 1 (failure), 2 (usage) or 130 (interrupted)."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # Typer reports usage errors (exit 2) and turns Ctrl-C into exit 130 by itself.
        command.main(args=args, prog_name="tuner", standalone_mode=True)
    except TunerError as exc:
        print_error(explain(exc))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "main"]
