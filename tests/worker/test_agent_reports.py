"""An idle agent stays online: it registers again on its own (with its GPUs' readings), says
when the experiment it serves is paused and runs again, and is offline once it leaves. The
agent runs in this process (its report interval shortened) against a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.worker.fake_smi import SMI_STATS, smi_printing_samples
from tests.worker.live import PYTHON, SCRIPTS, Server, small_document
from tuner.agent import Agent, AgentConfig, Gpu
from tuner.agent.gpus import parse_gpu_stats
from tuner.client import Client
from tuner.wire import WorkerOut

pytestmark = pytest.mark.slow


def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _worker(client: Client, worker_id: str) -> WorkerOut | None:
    found = [w for w in client.list_workers(limit=500).items if w.worker_id == worker_id]
    return found[0] if found else None


def test_an_idle_agent_registers_again_and_says_when_its_experiment_pauses(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = tmp_path / "smi"
    smi.mkdir()
    smi_printing_samples(smi)
    monkeypatch.setenv("PATH", f"{smi}:/usr/bin:/bin")
    monkeypatch.setenv("RUN_LOG", str(tmp_path / "runs.jsonl"))
    said: list[str] = []
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="agent-idle", budget={"max_trials": 1}))
        client.pause(experiment.id)
        config = AgentConfig(
            command=[PYTHON, str(SCRIPTS / "steps.py")], experiment_id=experiment.id,
            gpus=[Gpu("1")], checkpoint_root=tmp_path / "ck", claim_wait_s=0.2,
            report_every_s=0.3, worker_id="idle-agent",
        )
        agent = Agent(client, config, lambda text, _style: said.append(text))
        thread = threading.Thread(target=agent.run, name="test-agent")
        thread.start()
        try:
            _until(lambda: _worker(client, "idle-agent") is not None, "the registration")
            first = _worker(client, "idle-agent")
            assert first is not None and first.state == "idle"
            _until(lambda: any("paused by hand" in t for t in said), "the paused line")
            again = _worker(client, "idle-agent")  # claims got 204s; the reports went on
            assert again is not None and again.last_seen_at > first.last_seen_at
            expected = [s for s in parse_gpu_stats(SMI_STATS) if s["index"] == 1]
            assert [g.model_dump() for g in again.gpu_stats or []] == expected
            client.resume(experiment.id)
            _until(lambda: any("is running again" in t for t in said), "the running line")
            _until(lambda: any(" started, " in t for t in said), "a job")
        finally:
            agent.shutdown("the test is over")
            thread.join(60)
        assert not thread.is_alive()
        gone = _worker(client, "idle-agent")
    assert gone is not None and gone.state == "offline"
    paused = next(t for t in said if "paused by hand" in t)
    assert paused.endswith(
        f"experiment {experiment.id} paused by hand; the worker waits for it to resume "
        f"(`tuner resume {experiment.id}`)"
    )
    assert said[-1].split(" ", 1)[1].startswith("worker exits after ")
    assert said[-1].endswith(": the test is over")
