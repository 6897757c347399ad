"""``tuner worker``: the worker agent."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tuner.cli.options import DEFAULT_SERVER, ServerOpt, TokenOpt, VerboseOpt
from tuner.cli.output import configure_logging, print_error, stderr
from tuner.errors import ConfigError

if TYPE_CHECKING:  # imported when the command runs: `tuner --help` does not pay for them
    from tuner.agent import Agent

_STYLES = {"failed": "red", "dim": "dim"}


def _write_line(text: str, style: str) -> None:
    """One of the agent's lines on stderr (coloured on a terminal, plain text elsewhere)."""
    stderr.print(escape(text), style=_STYLES.get(style, ""), highlight=False)


def _install_signals(agent: Agent) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        agent.shutdown(f"{signal.Signals(signum).name} received")

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def worker(
    command: Annotated[
        list[str] | None,
        typer.Argument(help="the training command, after `--` (e.g. -- python train.py)"),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    experiment: Annotated[
        int | None, typer.Option(help="serve this experiment only (default: any running)")
    ] = None,
    gpus: Annotated[
        str, typer.Option(help="'all' (detect with nvidia-smi), 'none', or indices like 0,1")
    ] = "all",
    slots: Annotated[
        int, typer.Option(min=1, max=1024, help="concurrent jobs when there is no GPU")
    ] = 1,
    checkpoint_root: Annotated[
        Path, typer.Option(help="checkpoints go to ROOT/<experiment>/<trial number>")
    ] = Path("tuner-checkpoints"),
    exit_when_done: Annotated[
        bool, typer.Option(help="exit once the experiment(s) served are over")
    ] = False,
    grace_s: Annotated[
        float, typer.Option(min=0, help="seconds between SIGTERM and SIGKILL of a command")
    ] = 10.0,
    poll_s: Annotated[
        float, typer.Option(min=0, max=60, help="long-poll wait of one claim, seconds")
    ] = 10.0,
    worker_id: Annotated[str | None, typer.Option(help="name of this agent")] = None,
    echo: Annotated[bool, typer.Option(help="log the commands' output (with -v)")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no line per job (start and exit lines stay)")
    ] = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Run training jobs for the server (the worker agent).

    Claims one job per GPU (or CPU slot), runs COMMAND with the job in TUNER_* variables,
    heartbeats, and reports how it ended. On stderr: a line when each job starts (trial
    EXP/NUM, parameters, resources, slot) and ends (outcome, duration, why; the command's
    last lines when it failed). Exits 0 on SIGTERM/SIGINT after terminating its commands
    and releasing their jobs (queued again, no retry spent).
    """
    if not command:
        raise typer.BadParameter("give the training command after `--`", param_hint="COMMAND")
    from tuner.agent import Agent, AgentConfig, detect_gpus
    from tuner.client import Client

    configure_logging(verbose)
    try:
        found = detect_gpus(gpus)
    except ConfigError as exc:
        raise typer.BadParameter(exc.detail, param_hint="--gpus") from None
    config = AgentConfig(
        command=command,
        experiment_id=experiment,
        gpus=found,
        slots=slots,
        checkpoint_root=checkpoint_root.absolute(),
        exit_when_done=exit_when_done,
        grace_s=grace_s,
        claim_wait_s=poll_s,
        echo_output=echo,
        quiet=quiet,
    )
    if worker_id:
        config.worker_id = worker_id
    # The default (patient) retries: a completion must survive a server restart.
    with Client(server, token or "") as client:
        agent = Agent(client, config, _write_line)
        _install_signals(agent)
        code = agent.run()
    if agent.fatal:
        print_error(agent.fatal + " (check --server, --token and --experiment)")
    raise typer.Exit(code)
