"""Commands over experiments and trials: submit, ls, show, pause, resume, cancel, stop-trial,
schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuner.cli.documents import read_document
from tuner.cli.options import DEFAULT_SERVER, ServerOpt, TokenOpt, connect
from tuner.cli.output import stdout
from tuner.config import json_schema
from tuner.wire import ExperimentOut, RungsOut, TrialOut

ExperimentArg = Annotated[int, typer.Argument(help="experiment id", min=1)]


def submit(
    file: Annotated[
        Path, typer.Argument(help="experiment document (YAML or JSON)", exists=True, dir_okay=False)
    ],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Create an experiment from a document; prints its id."""
    document = read_document(file)
    with connect(server, token) as client:
        created = client.create_experiment(document)
    stdout.print(
        f"created experiment [bold]{created.id}[/] ({escape(created.name)}); "
        f"follow it with `tuner show {created.id}` or at {server.rstrip('/')}/ui"
    )


def ls(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    state: Annotated[str | None, typer.Option(help="running, paused, completed, cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """List experiments, newest first."""
    with connect(server, token) as client:
        page = client.list_experiments(state=state, limit=limit)
    table = Table("id", "name", "state", "trials", "best", "created", box=None)
    for item in page.items:
        best = item.progress.best
        table.add_row(
            str(item.id),
            escape(item.name),
            item.state,
            str(item.n_trials),
            _value(best.value) if best else "-",
            item.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    stdout.print(table)
    if page.total > len(page.items):
        stdout.print(f"({len(page.items)} of {page.total}; use --limit)")


def show(
    experiment: ExperimentArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    top: Annotated[int, typer.Option(help="best trials to list", min=0, max=200)] = 10,
) -> None:
    """Progress, best trial, rungs and the best trials of one experiment."""
    with connect(server, token) as client:
        info = client.get_experiment(experiment)
        rungs = client.rungs(experiment)
        best = client.list_trials(experiment, order_by="value", limit=max(top, 1)).items
    render_experiment(info, rungs, best[:top] if top else [])


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def render_experiment(info: ExperimentOut, rungs: RungsOut, best: list[TrialOut]) -> None:
    config = info.config
    scheduler = config.get("scheduler", {})
    stdout.print(
        f"[bold]experiment {info.id}[/] {escape(info.name)}: [bold]{info.state}[/], "
        f"{config.get('metric', 'loss')} ({config.get('mode', 'min')}), "
        f"{scheduler.get('type', '?')} eta={scheduler.get('eta', '?')} "
        f"r={scheduler.get('min_resource', '?')} R={scheduler.get('max_resource', '?')}"
    )
    if info.state_reason:
        stdout.print(f"[yellow]{escape(info.state_reason)}[/]")
    states = ", ".join(f"{k} {v}" for k, v in sorted(info.progress.trials_by_state.items()))
    stdout.print(
        f"trials: {info.n_trials} ({states or 'none yet'}); resource used: {info.resource_used}"
    )
    if info.progress.best is not None and best:
        top = best[0]
        stdout.print(
            f"best: trial {top.number} value {_value(info.progress.best.value)} "
            f"({escape(_params(top.params))})"
        )
    if rungs.items:
        table = Table(
            "bracket",
            "rung",
            "resource",
            "results",
            "promoted",
            "stopped",
            "top k",
            "value to beat",
            title="rungs",
            box=None,
        )
        for rung in rungs.items:
            table.add_row(
                str(rung.bracket),
                str(rung.rung),
                str(rung.resource),
                str(rung.n_results),
                str(rung.n_promoted),
                str(rung.n_stopped),
                str(rung.top_k),
                _value(rung.promotable_value),
            )
        stdout.print(table)
    if best:
        table = Table(
            "trial", "state", "rung", "resource", "best", "params", title="best trials", box=None
        )
        for trial in best:
            table.add_row(
                str(trial.number),
                trial.state,
                str(trial.rung),
                str(trial.resource),
                _value(trial.best_value),
                escape(_params(trial.params)),
            )
        stdout.print(table)


def _action(name: str) -> Any:
    def command(
        experiment: ExperimentArg,
        server: ServerOpt = DEFAULT_SERVER,
        token: TokenOpt = None,
    ) -> None:
        with connect(server, token) as client:
            out = getattr(client, name)(experiment)
        stdout.print(f"experiment {out.id} is {out.state}")

    command.__doc__ = {
        "pause": "Pause an experiment: no new jobs; running ones finish.",
        "resume": "Resume a paused experiment.",
        "cancel": "Cancel an experiment: running trials stop at their next report.",
    }[name]
    command.__name__ = name
    return command


pause = _action("pause")
resume = _action("resume")
cancel = _action("cancel")


def stop_trial(
    trial: Annotated[int, typer.Argument(help="trial id", min=1)],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Stop one trial by hand (it hears `stop` at its next report or heartbeat)."""
    with connect(server, token) as client:
        out = client.stop_trial(trial)
    stdout.print(
        f"trial {out.id} (number {out.number}) is {out.state}"
        + (" (stop requested)" if out.stop_requested else "")
    )


def schema() -> None:
    """Print the JSON Schema of the experiment document."""
    typer.echo(json.dumps(json_schema(), indent=2))
