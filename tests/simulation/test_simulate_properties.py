"""Invariants of whole simulated runs across seeds, scheduler types and noise."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simulation.helpers import document
from tuner.schedulers.rungs import s_max
from tuner.simulate import Simulator

SCHEDULERS: list[dict[str, Any]] = [
    {"type": "sha", "n_configs": 30},
    {"type": "hyperband"},
    {"type": "asha"},
    {"type": "asha", "form": "stopping"},
    {"type": "async_hyperband"},
    {"type": "async_hyperband", "form": "stopping"},
    {"type": "pasha"},
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheduler=st.sampled_from(SCHEDULERS),
    eta=st.sampled_from([2, 3]),
    max_resource=st.sampled_from([4, 9, 27]),
    workers=st.integers(1, 12),
    max_trials=st.integers(3, 40),
    seed=st.integers(0, 2**31),
    sigma=st.sampled_from([0.0, 0.8]),
    drop_prob=st.sampled_from([0.0, 0.1]),
    every_step=st.booleans(),
    mode=st.sampled_from(["min", "max"]),
)
def test_simulation_terminates_with_every_trial_final_and_resource_accounted(
    scheduler: dict[str, Any],
    eta: int,
    max_resource: int,
    workers: int,
    max_trials: int,
    seed: int,
    sigma: float,
    drop_prob: float,
    every_step: bool,
    mode: str,
) -> None:
    sched = {**scheduler, "eta": eta, "min_resource": 1, "max_resource": max_resource}
    if sched["type"] == "sha":  # enough configurations to reach R
        sched["n_configs"] = eta ** s_max(1, max_resource, eta) + max_trials
    doc = document(sched, max_trials=max_trials, mode=mode, max_retries=100, lease_ttl_s=30)
    sim = Simulator(
        doc,
        workers,
        seed=seed,
        straggler_sigma=sigma,
        drop_prob=drop_prob,
        report_every_step=every_step,
    )

    result = sim.run()

    trials = sim.store.trials(sim.experiment_id)
    assert not result.stalled and not result.truncated
    assert result.experiment_state == "completed"
    assert all(t.state.is_finished() for t in trials)
    assert sum(result.trial_states.values()) == result.n_trials == len(trials)
    assert result.n_reaped == result.n_dropped
    # every unit trained either lives on in a trial or was lost with a dropped job
    assert result.resource_used == sum(t.resource for t in trials) + result.resource_wasted
    if not drop_prob and not sim.stopping:
        assert result.resource_used == result.resource_charged
    assert 0.0 <= result.utilization <= 1.0 + 1e-9
