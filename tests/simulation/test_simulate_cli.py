"""``tuner simulate`` glue: JSON output, readable summary, settings file, invalid documents,
and the example documents (one per scheduler type)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.simulation.helpers import document
from tuner.config import load_config
from tuner.simulate import simulate
from tuner.simulate.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def write(tmp_path: Path, doc: object, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


ASHA_DOC = document({"type": "asha", "max_resource": 9}, max_trials=40)


def test_simulate_command_json_prints_one_object(tmp_path: Path) -> None:
    path = write(tmp_path, ASHA_DOC)

    result = runner.invoke(app, [str(path), "--workers", "4", "--json", "--stragglers", "0.3"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_trials"] == 40
    assert data["settings"]["straggler_sigma"] == 0.3


def test_simulate_command_prints_a_summary_with_rungs(tmp_path: Path) -> None:
    path = write(tmp_path, ASHA_DOC)

    result = runner.invoke(app, [str(path), "--workers", "4"])

    assert result.exit_code == 0, result.output
    assert "rungs" in result.stdout
    assert "utilization" in result.stdout


def test_simulate_command_reads_settings_and_flags_win(tmp_path: Path) -> None:
    path = write(tmp_path, ASHA_DOC)
    settings = write(tmp_path, {"workers": 3, "seed": 5, "drop": 0.1}, "sim.yaml")

    result = runner.invoke(app, [str(path), "--settings", str(settings), "--seed", "6", "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["workers"] == 3
    assert data["settings"]["seed"] == 6
    assert data["settings"]["drop_prob"] == 0.1


@pytest.mark.parametrize(
    ("doc", "args", "message"),
    [
        (document({"type": "asha", "max_resource": 9, "eta": 1}), [], "scheduler.eta"),
        ({**ASHA_DOC, "simulation": {"workers": 3}}, [], "simulation"),
        (ASHA_DOC, ["--objective", "nope"], "objective"),
        (ASHA_DOC, ["--drop", "2"], "drop_prob"),
    ],
    ids=["bad-field", "extra-key", "objective", "drop"],
)
def test_simulate_command_exits_2_with_the_reason(
    tmp_path: Path, doc: object, args: list[str], message: str
) -> None:
    path = write(tmp_path, doc)

    result = runner.invoke(app, [str(path), "--workers", "2", *args])

    assert result.exit_code == 2
    assert message in result.output


def test_simulate_command_needs_workers(tmp_path: Path) -> None:
    result = runner.invoke(app, [str(write(tmp_path, ASHA_DOC))])

    assert result.exit_code == 2
    assert "workers" in result.output


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


SCHEDULER_EXAMPLES = [
    EXAMPLES / f"{name}.yaml"
    for name in ("sha", "hyperband", "asha", "asha-stopping", "async_hyperband", "pasha")
]


def test_examples_cover_every_scheduler_type_on_the_curves_space() -> None:
    configs = [load_config(path) for path in SCHEDULER_EXAMPLES]
    kinds = {(c.scheduler.type, c.scheduler.form) for c in configs}
    assert all(set(c.space.names) == {"lr", "width", "dropout"} for c in configs)
    assert {k for k, _ in kinds} == {"sha", "hyperband", "asha", "async_hyperband", "pasha"}
    assert ("asha", "stopping") in kinds


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_example_document_simulates_to_completion(path: Path) -> None:
    config = load_config(path)
    if config.budget.max_trials is not None:  # keep the test fast
        config = config.model_copy(
            update={"budget": config.budget.model_copy(update={"max_trials": 150})}
        )

    result = simulate(config, workers=16, straggler_sigma=0.3)

    assert result.experiment_state == "completed"
    assert not result.stalled
    assert result.n_trials >= 1
