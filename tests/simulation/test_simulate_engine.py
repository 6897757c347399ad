"""The event loop: determinism, leases and heartbeats, drops and reaping, limits, errors."""

from __future__ import annotations

import json

import pytest

from tests.simulation.helpers import document
from tuner.errors import ConfigError
from tuner.simulate import Simulator, simulate

ASHA = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 27}


@pytest.mark.parametrize(
    "scheduler",
    [
        ASHA,
        {**ASHA, "form": "stopping"},
        {"type": "hyperband", "eta": 3, "min_resource": 1, "max_resource": 27},
        {"type": "pasha", "eta": 3, "min_resource": 1, "max_resource": 27},
    ],
    ids=["asha", "asha-stopping", "hyperband", "pasha"],
)
def test_simulate_same_seed_gives_identical_json(scheduler: dict[str, object]) -> None:
    doc = document(scheduler, max_trials=120)
    kwargs = {"straggler_sigma": 0.7, "drop_prob": 0.05, "time_model": "param:width"}

    first = simulate(doc, workers=9, seed=3, **kwargs).to_json()  # type: ignore[arg-type]
    second = simulate(doc, workers=9, seed=3, **kwargs).to_json()  # type: ignore[arg-type]
    other = simulate(doc, workers=9, seed=4, **kwargs).to_json()  # type: ignore[arg-type]

    assert first == second
    assert first != other


def test_simulate_result_json_is_one_object_with_the_documented_fields() -> None:
    result = simulate(document(ASHA, max_trials=50), workers=4)

    data = json.loads(result.to_json())

    for key in (
        "n_trials",
        "n_jobs",
        "utilization",
        "time_to_first_max_resource",
        "best_value",
        "resource_used",
        "wall_time",
        "worker_hours",
        "n_completed_at_max",
        "rungs",
        "config",
    ):
        assert key in data
    assert data["rungs"][0] == {
        "bracket": 0,
        "rung": 0,
        "resource": 1,
        "n_results": 50,
        "n_promoted": data["rungs"][0]["n_promoted"],
    }
    assert data["config"]["scheduler"]["type"] == "asha"
    assert result.gpu_hours == result.worker_hours


def test_simulate_without_seed_keeps_the_document_seed() -> None:
    doc = document(ASHA, max_trials=30, seed=11)

    assert simulate(doc, workers=3).to_json() == simulate(doc, workers=3, seed=11).to_json()


def test_simulate_heartbeats_keep_long_jobs_leased() -> None:
    doc = document(ASHA, max_trials=20, lease_ttl_s=5)

    result = simulate(doc, workers=4, time_model="constant:10")  # jobs of 10 s to 180 s

    assert result.n_reaped == 0
    assert result.n_completed_at_max >= 1
    assert result.experiment_state == "completed"


def test_simulate_reaps_every_dropped_job_once_and_requeues_it() -> None:
    doc = document(ASHA, max_trials=200, max_retries=100)

    result = simulate(doc, workers=8, seed=1, drop_prob=0.2)

    assert result.n_dropped > 10
    assert result.n_reaped == result.n_dropped
    assert result.trial_states.get("failed", 0) == 0
    assert result.resource_used > result.resource_charged  # dropped work is redone


def test_simulate_every_step_reports_change_no_promotion_decision() -> None:
    doc = document(ASHA, max_trials=60)

    at_end = simulate(doc, workers=5)
    every_step = simulate(doc, workers=5, report_every_step=True)

    assert every_step.rungs == at_end.rungs
    assert every_step.best_value == at_end.best_value
    assert every_step.wall_time == at_end.wall_time


def test_simulate_maximised_metric_seeks_the_objective_minimum() -> None:
    doc = document(ASHA, max_trials=60, mode="max")

    minimised = simulate(document(ASHA, max_trials=60), workers=5)
    maximised = simulate(doc, workers=5)

    assert maximised.best_value == pytest.approx(-(minimised.best_value or 0.0))


def test_simulate_horizon_truncates_the_run() -> None:
    result = simulate(document(ASHA), workers=4, horizon_s=50.0)

    assert result.truncated
    assert result.wall_time == 50.0


def test_simulator_keeps_its_store_readable() -> None:
    sim = Simulator(document(ASHA, max_trials=30), workers=3)
    result = sim.run()

    trials = sim.store.trials(sim.experiment_id)
    assert len(trials) == result.n_trials == 30
    assert all(t.state.is_finished() for t in trials)


@pytest.mark.parametrize(
    ("doc", "kwargs", "message"),
    [
        (document(ASHA), {}, "never ends"),
        (document(ASHA, max_trials=5), {"workers": 0}, "workers"),
        (document(ASHA, max_trials=5), {"drop_prob": 1.0}, "drop_prob"),
        (document(ASHA, max_trials=5), {"straggler_sigma": -1.0}, "straggler_sigma"),
        (document(ASHA, max_trials=5), {"objective": "nope"}, "objective"),
        (document(ASHA, max_trials=5), {"time_model": "param:nope"}, "nope"),
        (document({**ASHA, "eta": 1}, max_trials=5), {}, "scheduler.eta"),
    ],
    ids=["endless", "workers", "drop", "sigma", "objective", "time-param", "document"],
)
def test_simulate_refuses_invalid_settings(
    doc: dict[str, object], kwargs: dict[str, object], message: str
) -> None:
    kwargs = {"workers": 2, **kwargs}
    with pytest.raises(ConfigError, match=message):
        simulate(doc, **kwargs)  # type: ignore[arg-type]


def test_simulate_reports_progress_up_to_the_last_trial() -> None:
    seen: list[tuple[int, int | None, float]] = []

    simulate(document(ASHA, max_trials=40), workers=2, progress=lambda *a: seen.append(a))

    assert seen[-1][:2] == (40, 40)
    assert [s[2] for s in seen] == sorted(s[2] for s in seen)
