"""Commands over experiments and trials: submit, ls, show, pause, resume, cancel, stop-trial,
export, schema.

A trial is named as people see it: ``EXP/NUM``, trial ``NUM`` (0-based) of experiment
``EXP`` (``2/3``), never by its database id. ``--json`` prints the API's answers instead of
tables, and nothing else on stdout.
"""

from __future__ import annotations

import enum
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuner.cli.documents import read_document
from tuner.cli.options import DEFAULT_SERVER, ServerOpt, TokenOpt, connect
from tuner.cli.output import stderr, stdout

if TYPE_CHECKING:  # the wire models load with the client, when a command talks to a server
    from pydantic import BaseModel

    from tuner.wire import (
        ExperimentOut,
        FailuresOut,
        RungsOut,
        TrialDetailOut,
        TrialOut,
    )

ExperimentArg = Annotated[int, typer.Argument(help="experiment id", min=1)]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="print the API's JSON answer instead of tables")
]
ExperimentOpt = Annotated[
    int | None,
    typer.Option(
        "--experiment", "-e", min=1, help="the trial's experiment, when the trial is NUM alone"
    ),
]


def trial_ref(experiment_id: int, number: int) -> str:
    """How a trial is shown and typed: ``EXP/NUM``."""
    return f"{experiment_id}/{number}"


def _whole(text: str, what: str, low: int) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) < low:
        raise typer.BadParameter(f"{what} is {text!r}, but must be a whole number >= {low}")
    return int(digits)


def parse_trial(text: str, experiment: int | None = None) -> tuple[int, int]:
    """``"2/3"`` (or ``"3"`` with ``experiment=2``): (experiment id, trial number).

    Raises:
        typer.BadParameter: a usage error (exit 2), saying to write ``EXP/NUM``.
    """
    head, slash, tail = text.partition("/")
    if not slash:
        if experiment is None:
            number = text.strip() if text.strip().isdigit() else "3"
            raise typer.BadParameter(
                f"{text!r} does not say which experiment: write the trial as EXP/NUM, as "
                f"`tuner show` prints it (e.g. 2/{number} for trial {number} of experiment 2), "
                "or add --experiment EXP"
            )
        return experiment, _whole(text, "the trial number", 0)
    found = _whole(head, "the experiment id in EXP/NUM", 1), _whole(tail, "NUM in EXP/NUM", 0)
    if experiment is not None and experiment != found[0]:
        raise typer.BadParameter(
            f"{text} is a trial of experiment {found[0]}, but --experiment is {experiment}"
        )
    return found


def print_json(data: BaseModel | dict[str, Any]) -> None:
    """One JSON document on stdout, as the API answered (rich would read ``[...]`` as markup)."""
    text = json.dumps(data, indent=2) if isinstance(data, dict) else data.model_dump_json(indent=2)
    sys.stdout.write(text + "\n")


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
        f"follow it with `tuner show {created.id}` or at "
        f"{server.rstrip('/')}/ui/experiments/{created.id}"
    )


def ls(
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    state: Annotated[str | None, typer.Option(help="running, paused, completed, cancelled")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List experiments, newest first."""
    with connect(server, token) as client:
        page = client.list_experiments(state=state, limit=limit)
    if as_json:
        print_json(page)
        return
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
    target: Annotated[
        str,
        typer.Argument(
            help="an experiment (EXP), or one of its trials (EXP/NUM)", metavar="EXP[/NUM]"
        ),
    ],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    top: Annotated[int, typer.Option(help="best trials to list", min=0, max=200)] = 10,
    failures: Annotated[
        int, typer.Option(help="latest failed jobs to list", min=0, max=100)
    ] = 5,
    as_json: JsonOpt = False,
) -> None:
    """One experiment (progress, best trial, rungs, best trials, latest failures), or one
    trial given as EXP/NUM (parameters, state, checkpoint, jobs and their errors)."""
    if "/" in target:
        experiment, number = parse_trial(target)
        with connect(server, token) as client:
            trial = client.get_trial_by_number(experiment, number)
        if as_json:
            print_json(trial)
        else:
            render_trial(trial)
        return
    experiment = _whole(target, "EXP", 1)
    with connect(server, token) as client:
        info = client.get_experiment(experiment)
        rungs = client.rungs(experiment)
        ranked = client.list_trials(experiment, order_by="value", limit=max(top, 1)).items
        failed = client.failures(experiment, limit=failures) if failures else None
    best = ranked[:top]
    if as_json:
        print_json({
            "experiment": info.model_dump(mode="json"),
            "rungs": rungs.model_dump(mode="json"),
            "best_trials": [trial.model_dump(mode="json") for trial in best],
            "failures": failed.model_dump(mode="json") if failed is not None else None,
        })
        return
    ranked_ones = [trial for trial in best if trial.ranked_step is not None]  # the table's
    render_experiment(info, rungs, ranked_ones, leader=ranked[0] if ranked else None)
    if failed is not None:
        render_failures(failed)


def _word(state: str) -> str:
    """A trial state as people read it ("waiting" for paused: tuner.domain.TrialState.word)."""
    from tuner.domain import TrialState

    return TrialState(state).word


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def render_experiment(
    info: ExperimentOut, rungs: RungsOut, best: list[TrialOut], *, leader: TrialOut | None
) -> None:
    """The experiment's summary; ``leader`` is the top of the ranking (its "best:" line,
    shown even with ``--top 0``), ``best`` the trials of the table."""
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
    states = ", ".join(
        f"{_word(k)} {v}" for k, v in sorted(info.progress.trials_by_state.items())
    )
    stdout.print(
        f"trials: {info.n_trials} ({states or 'none yet'}); resource used: {info.resource_used}"
    )
    if info.progress.best is not None and leader is not None:
        top = leader  # the top of the ranking: its value at the highest rung it reached
        saved = "no checkpoint"
        if top.checkpoint is not None:
            saved = f"checkpoint {escape(top.checkpoint)} (step {top.checkpoint_step})"
        stdout.print(
            f"best: trial {trial_ref(top.experiment_id, top.number)} value "
            f"{_value(top.ranked_value)} at step {top.ranked_step}, {saved} "
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
        if any(rung.n_promoted > rung.top_k for rung in rungs.items):
            stdout.print(
                "(promoted may exceed top k: ASHA judges with the results at hand, and a "
                "trial promoted while in the top k stays promoted when better ones arrive)"
            )
    if best:
        table = Table(
            "trial", "state", "rung", "resource", "value (step)", "best at a rung", "params",
            title="best trials (by the highest rung reached, then the value there)", box=None,
        )
        for trial in best:
            ranked = "-" if trial.ranked_step is None else (
                f"{_value(trial.ranked_value)} ({trial.ranked_step})"
            )
            table.add_row(
                trial_ref(trial.experiment_id, trial.number),
                _word(trial.state),
                str(trial.rung),
                str(trial.resource),
                ranked,
                _value(trial.best_value),
                escape(_params(trial.params)),
            )
        stdout.print(table)


def _time(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")


def _last_lines(text: str, n: int) -> list[str]:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    return lines[-n:]


def render_failures(failed: FailuresOut) -> None:
    """The latest failed and lost jobs, each with its error's last line."""
    if not failed.items:
        return
    table = Table(
        "trial", "attempt", "outcome", "ended", "error (last line)",
        title=f"failures: the latest {len(failed.items)} of {failed.total} failed or lost jobs",
        box=None,
    )
    for failure in failed.items:
        last = _last_lines(failure.error, 1)
        table.add_row(
            trial_ref(failure.experiment_id, failure.trial_number),
            str(failure.attempt),
            failure.outcome,
            _time(failure.ended_at),
            escape(last[0] if last else "(no error text)"),
        )
    stdout.print(table)
    stdout.print("(`tuner show EXP/NUM` shows a trial's jobs and the end of each error)")


def render_trial(trial: TrialDetailOut) -> None:
    """One trial: where it stands, its parameters, value, checkpoint, jobs and errors."""
    ref = trial_ref(trial.experiment_id, trial.number)
    rung = f"at rung {trial.rung}" if trial.rung >= 0 else "no rung reached yet"
    stdout.print(
        f"[bold]trial {ref}[/]: [bold]{_word(trial.state)}[/], {rung}, resource {trial.resource} "
        f"(bracket {trial.bracket}); retries {trial.retries}"
        + ("; stop requested" if trial.stop_requested else "")
    )
    stdout.print(f"params: {escape(_params(trial.params)) or '-'}")
    if trial.ranked_value is not None:
        stdout.print(
            f"value: {_value(trial.ranked_value)} at step {trial.ranked_step} (its highest "
            f"rung; best at any rung {_value(trial.best_value)})"
        )
    current = [r for r in trial.reports if r.superseded_by_job_id is None]
    if current:
        last = current[-1]
        shown = _value(last.value) if last.value_kind == "finite" else last.value_kind
        stdout.print(f"last report: {shown} at step {last.step}")
    if trial.checkpoint:
        at = f" (step {trial.checkpoint_step})" if trial.checkpoint_step is not None else ""
        stdout.print(f"checkpoint: {escape(trial.checkpoint)}{at}")
    if not trial.jobs:
        return
    table = Table(
        "job", "rung", "resource", "attempt", "worker", "outcome", "ended", title="jobs", box=None
    )
    for job in trial.jobs:
        table.add_row(
            str(job.id), str(job.rung), f"{job.from_resource}->{job.to_resource}",
            str(job.attempt), escape(job.worker_id or "-"), job.state, _time(job.ended_at),
        )
    stdout.print(table)
    for job in trial.jobs:
        if job.error is not None:  # failed or lost: the server says why
            lines = _last_lines(job.error, 5)
            stdout.print(f"[red]job {job.id} (attempt {job.attempt}) {job.state}:[/]")
            for line in lines or ["(no error text)"]:
                stdout.print(f"  {escape(line)}")


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
    trial: Annotated[
        str,
        typer.Argument(
            help="the trial as EXP/NUM (trial NUM of experiment EXP, as `tuner show` prints "
            "it), or NUM with --experiment EXP",
            metavar="EXP/NUM",
        ),
    ],
    experiment: ExperimentOpt = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Stop one trial by hand (it hears `stop` at its next report or heartbeat)."""
    experiment_id, number = parse_trial(trial, experiment)
    with connect(server, token) as client:
        out = client.stop_trial_by_number(experiment_id, number)
    stdout.print(
        f"trial {trial_ref(out.experiment_id, out.number)} is {out.state}"
        + (" (stop requested: it stops at its next report)" if out.stop_requested else "")
    )


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    JSON = "json"


def export(
    experiment: ExperimentArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="csv (a spreadsheet) or json")
    ] = ExportFormat.CSV,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="write here instead of stdout"),
    ] = None,
) -> None:
    """The experiment's trials, best first (parameters, values, rung reached, state)."""
    with connect(server, token) as client:
        data = client.export(experiment, format=format.value)
    text = data if isinstance(data, str) else json.dumps(data, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {output}: {exc.strerror}", param_hint="--output"
        ) from None
    stderr.print(f"wrote the trials of experiment {experiment} to {escape(str(output))}")


def schema() -> None:
    """Print the JSON Schema of the experiment document."""
    from tuner.config import json_schema  # the document's model: pydantic, numpy

    typer.echo(json.dumps(json_schema(), indent=2))
