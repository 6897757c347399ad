"""``tuner simulate EXPERIMENT.yaml --workers N``: the command-line face of the simulator.

Mount :func:`simulate_command` on the main typer app (``app.command("simulate")(...)``) or
add :data:`app` as a sub-app. Simulator settings come from flags, or from an optional
``--settings FILE`` (YAML or JSON mapping with the long flag names, underscores allowed:
``workers``, ``seed``, ``objective``, ``stragglers``, ``drop``, ``time_per_unit``,
``time_param``, ``every_step``, ``horizon``); a flag given on the command line wins. The
experiment document itself has no simulator section: its model forbids unknown keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.config import load_config
from tuner.errors import ConfigError
from tuner.simulate.engine import simulate
from tuner.simulate.objectives import OBJECTIVES
from tuner.simulate.result import SimulationResult
from tuner.simulate.timing import TimeModel

app = typer.Typer(help="Simulate an experiment on virtual workers.", no_args_is_help=True)

_DEFAULTS: dict[str, Any] = {
    "workers": None,
    "seed": None,
    "objective": "curves",
    "stragglers": 0.0,
    "drop": 0.0,
    "time_per_unit": 1.0,
    "time_param": None,
    "every_step": False,
    "horizon": None,
}
_SHOW_PROGRESS_FROM = 2000  # trials: smaller runs finish before a bar is worth drawing


def _load_settings(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read simulator settings ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: simulator settings must be a mapping")
    settings = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(settings) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"{path}: {unknown[0]}: not a simulator setting (known: {', '.join(_DEFAULTS)})"
        )
    return settings


def _merge(flags: dict[str, Any], file: dict[str, Any]) -> dict[str, Any]:
    return {
        key: flags[key] if flags.get(key) is not None else file.get(key, default)
        for key, default in _DEFAULTS.items()
    }


@app.command("simulate")
def simulate_command(
    path: Annotated[Path, typer.Argument(help="experiment document (YAML or JSON)")],
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="virtual workers")] = None,
    seed: Annotated[
        int | None, typer.Option(help="replaces the document's seed; also seeds the noise")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    objective: Annotated[
        str | None, typer.Option(help=f"synthetic objective: {', '.join(OBJECTIVES)}")
    ] = None,
    straggler_sigma: Annotated[
        float | None, typer.Option("--stragglers", help="sigma of mean-one lognormal slow-downs")
    ] = None,
    drop_prob: Annotated[
        float | None, typer.Option("--drop", help="probability that a job's worker vanishes")
    ] = None,
    time_per_unit: Annotated[
        float | None, typer.Option(help="virtual seconds per resource unit")
    ] = None,
    time_param: Annotated[
        str | None, typer.Option(help="scale job time by this numeric parameter (e.g. width)")
    ] = None,
    every_step: Annotated[
        bool | None, typer.Option("--every-step", help="report at every integer step")
    ] = None,
    horizon: Annotated[float | None, typer.Option(help="stop at this virtual time (s)")] = None,
    settings: Annotated[
        Path | None, typer.Option(help="YAML/JSON file with simulator settings")
    ] = None,
) -> None:
    """Run the experiment on virtual workers and print what the service would do.

    Exits with status 2 on an invalid document or setting, printing the field and the reason.
    """
    err = Console(stderr=True)
    try:
        config = load_config(path)
        flags = {
            "workers": workers,
            "seed": seed,
            "objective": objective,
            "stragglers": straggler_sigma,
            "drop": drop_prob,
            "time_per_unit": time_per_unit,
            "time_param": time_param,
            "every_step": every_step,
            "horizon": horizon,
        }
        opts = _merge(flags, _load_settings(settings))
        if opts["workers"] is None:
            raise ConfigError("workers: give --workers N (or workers in --settings)")
        time_model = TimeModel(float(opts["time_per_unit"]), opts["time_param"])
        max_trials = config.budget.max_trials
        show_bar = not json_out and err.is_terminal and (max_trials or 0) >= _SHOW_PROGRESS_FROM
        with Progress(
            TextColumn("simulating"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} trials"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not show_bar,
        ) as bar:
            task = bar.add_task("simulate", total=max_trials)

            def on_progress(started: int, total: int | None, _now: float) -> None:
                bar.update(task, completed=started, total=total)

            result = simulate(
                config,
                int(opts["workers"]),
                opts["seed"],
                str(opts["objective"]),
                time_model,
                float(opts["stragglers"]),
                float(opts["drop"]),
                on_progress if show_bar else None,
                report_every_step=bool(opts["every_step"]),
                horizon_s=None if opts["horizon"] is None else float(opts["horizon"]),
            )
    except ConfigError as exc:
        # One line per problem, as `tuner submit` prints them (FILE:LINE: field: reason).
        err.print(f"[bold red]invalid:[/] {escape(exc.detail)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    if json_out:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_summary(result, Console())


def print_summary(result: SimulationResult, console: Console) -> None:
    """A readable summary: headline figures and a table of rungs."""
    cfg, st = result.config, result.settings
    sched = cfg["scheduler"]
    console.print(
        f"[bold]{cfg['name']}[/]: {sched['type']} (eta={sched['eta']}, "
        f"r={sched['min_resource']}, R={sched['max_resource']}) on {st['workers']} workers, "
        f"objective {st['objective']} ({st['objective_params']}), {st['time_model']}"
    )
    first = result.time_to_first_max_resource
    while_starting = result.utilization_while_starting
    rows = [
        ("trials / jobs", f"{result.n_trials} / {result.n_jobs}"),
        ("trial states", ", ".join(f"{k} {v}" for k, v in result.trial_states.items())),
        ("virtual wall time", f"{result.wall_time:,.1f} s"),
        ("first trial at R", "never" if first is None else f"{first:,.1f} s"),
        ("trained to R", str(result.n_completed_at_max)),
        ("best value", _best(result)),
        ("utilization", f"{result.utilization:.1%} (whole run)"),
        (
            "  while starting trials",
            "n/a"
            if while_starting != while_starting
            else f"{while_starting:.1%} (until {result.last_trial_started_at:,.1f} s)",
        ),
        ("resource trained", f"{result.resource_used:,} units ({result.resource_wasted:,} lost)"),
        ("worker-hours", f"{result.worker_hours:,.2f}"),
    ]
    if result.n_dropped:
        rows.append(("dropped / reaped jobs", f"{result.n_dropped} / {result.n_reaped}"))
    if result.stalled or result.truncated:
        rows.append(("ended", "stalled" if result.stalled else "at the horizon"))
    summary = Table(show_header=False, box=None)
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)
    rungs = Table(title="rungs")
    for name in ("bracket", "rung", "resource", "results", "promoted"):
        rungs.add_column(name, justify="right")
    for rung in result.rungs:
        rungs.add_row(
            *(
                str(v)
                for v in (rung.bracket, rung.rung, rung.resource, rung.n_results, rung.n_promoted)
            )
        )
    console.print(rungs)


def _best(result: SimulationResult) -> str:
    if result.best_value is None:
        return "none"
    return f"{result.best_value:.6g} (trial {result.best_trial} at resource {result.best_resource})"
