"""The metric through a real agent: the script is told what the experiment optimises
(``TUNER_METRIC``, ``TUNER_MODE``), and a script that reports another metric fails at its
first report with an error that names both, instead of training for nothing."""

from __future__ import annotations

import pytest

from tests.worker.live import Server, small_document
from tests.worker.test_agent import Agents, agents

pytestmark = pytest.mark.slow

__all__ = ["agents"]  # the fixture, for the tests below


def test_the_script_is_told_the_metric_and_mode(shared_server: Server, agents: Agents) -> None:
    doc = small_document(
        name="agent-metric", metric="accuracy", mode="max", budget={"max_trials": 1},
        lease_ttl_s=30,
    )
    with shared_server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(
            shared_server, experiment.id, "--exit-when-done", REPORT_METRIC="accuracy"
        )
        assert agent.wait(60) == 0
        [started] = agents.events("start")
        trial = client.get_trial(started["trial_id"])
    assert (started["metric"], started["mode"]) == ("accuracy", "max")
    assert trial.state != "failed" and [r.step for r in trial.reports] == [1]


def test_a_script_reporting_another_metric_fails_with_a_clear_error(
    shared_server: Server, agents: Agents
) -> None:
    doc = small_document(
        name="agent-wrong-metric", metric="val_loss", budget={"max_trials": 1}, lease_ttl_s=30,
        max_retries=0,
    )
    with shared_server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(
            shared_server, experiment.id, "--exit-when-done", REPORT_METRIC="accuracy"
        )
        assert agent.wait(60) == 0
        [failure] = client.failures(experiment.id).items
        trial = client.get_trial(failure.trial_id)
    assert trial.state == "failed" and trial.reports == []
    assert "MetricMismatch" in failure.error
    assert "this experiment optimises val_loss (min), but the report is for accuracy" in (
        failure.error
    )
