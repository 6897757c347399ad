"""The worker agent end to end: real server, real agents (``tuner worker``), real scripts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worker.fake_smi import SMI_STATS, smi_printing_samples
from tests.worker.live import (
    ADMIN_TOKEN,
    PYTHON,
    ROOT,
    SCRIPTS,
    Server,
    ServerFactory,
    small_document,
    tuner_command,
)
from tuner.agent.gpus import parse_gpu_stats
from tuner.client import Client
from tuner.wire import WorkerOut

pytestmark = pytest.mark.slow

STEPS = str(SCRIPTS / "steps.py")
CRASH = str(SCRIPTS / "crash.py")
#: A job's end line: time, slot, trial EXP/NUM, outcome and why, duration.
END_LINE = re.compile(
    r"(?m)^\d\d:\d\d:\d\d (slot \d+|gpu \d+): (\d+/\d+) "
    r"(completed|waiting at rung \d+|stopped|failed|lease lost|released)[^\n]* \[[0-9.hms]+\]$"
)
START_LINE = re.compile(
    r"(?m)^\d\d:\d\d:\d\d (slot \d+|gpu \d+): (\d+/\d+) started, resource (\d+)→(\d+) "
    r"\(rung \d+\)"
)


class Agents:
    """``tuner worker`` processes started by one test; all are ended afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.run_log = tmp_path / "runs.jsonl"
        self.run_log.touch()
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        server: Server,
        experiment_id: int,
        *extra: str,
        script: str = STEPS,
        gpus: str = "none",
        **env: str,
    ) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"agent{len(self.started)}.log").open("wb")
        process = subprocess.Popen(
            tuner_command(
                "worker",
                "--server",
                server.url,
                "--token",
                ADMIN_TOKEN,
                "--experiment",
                str(experiment_id),
                "--gpus",
                gpus,
                "--poll-s",
                "1",
                "--checkpoint-root",
                str(self.tmp_path / "checkpoints"),
                "-v",
                *extra,
                "--",
                PYTHON,
                script,
            ),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUN_LOG": str(self.run_log), **env},
        )
        self.started.append(process)
        return process

    def output(self, index: int = 0) -> str:
        """What agent ``index`` printed (stdout and stderr)."""
        return (self.tmp_path / f"agent{index}.log").read_text()

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.run_log.read_text().splitlines() if line]
        return [e for e in lines if event is None or e["event"] == event]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in self.tmp_path.glob("agent*.log"))
                raise AssertionError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    found = Agents(tmp_path)
    yield found
    found.stop_all()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_agent_killed_mid_job_trial_resumes_from_checkpoint_elsewhere(
    shared_server: Server, agents: Agents
) -> None:
    server = shared_server
    # One trial, one job of 8 steps (rungs 8 and 9, nothing promoted from a rung of one).
    doc = small_document(
        name="agent-kill",
        budget={"max_trials": 1},
        lease_ttl_s=3,
        scheduler={"type": "asha", "eta": 3, "min_resource": 8, "max_resource": 9},
    )
    with server.client() as client:
        experiment = client.submit(doc)
        first = agents.start(server, experiment.id, STEP_S="0.4")
        agents.wait_for(lambda: len(agents.events("report")) >= 2, 30, "two reports")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started = agents.events("start")[0]
        # The training process dies with its agent (it would keep the lease alive).
        agents.wait_for(lambda: not _alive(started["pid"]), 5, "the orphan to die")
        done = len(agents.events("report"))

        second = agents.start(server, experiment.id, "--exit-when-done", STEP_S="0.05")
        assert second.wait(60) == 0
        info = client.get_experiment(experiment.id)
    assert info.state == "completed"
    starts = agents.events("start")
    assert len(starts) == 2
    resumed = starts[1]
    assert resumed["checkpoint"], "the second run got no checkpoint"
    assert Path(resumed["checkpoint"]).parent == Path(started["checkpoint_dir"])
    assert resumed["from_resource"] == done >= 2
    assert resumed["checkpoint"].endswith(f"step-{done}.txt")
    assert agents.events("resumed")[0]["step"] == done
    assert resumed["cuda"] == ""  # a CPU slot hides the GPUs


def test_a_lost_workers_retry_reports_again_and_the_trial_goes_on(
    shared_server: Server, agents: Agents
) -> None:
    """The retry of a lost worker's job starts from the last checkpoint (step 3), so it
    reports steps 4 and 5 again with other values (the noise differs per run). Those are
    stored as the current values, the first run's kept as superseded history, and the trial
    is trained to its rung instead of failing on ``duplicate_report``."""
    server = shared_server
    doc = small_document(
        name="agent-retry-values",
        budget={"max_trials": 1},
        lease_ttl_s=3,
        max_retries=1,
        scheduler={"type": "asha", "eta": 3, "min_resource": 8, "max_resource": 9},
    )
    env = {"NOISE": "1", "CHECKPOINT_EVERY": "3"}
    with server.client() as client:
        experiment = client.submit(doc)
        first = agents.start(server, experiment.id, STEP_S="0.4", **env)
        agents.wait_for(lambda: len(agents.events("report")) >= 5, 30, "five reports")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        started = agents.events("start")[0]
        agents.wait_for(lambda: not _alive(started["pid"]), 5, "the orphan to die")
        reported_first = {e["step"]: e["value"] for e in agents.events("report")}

        second = agents.start(server, experiment.id, "--exit-when-done", STEP_S="0.05", **env)
        assert second.wait(60) == 0
        info = client.get_experiment(experiment.id)
        trial = client.get_trial(started["trial_id"])
    # Trained to its rung (a rung of one promotes nothing, so it ends stopped), not failed.
    assert info.state == "completed" and trial.state == "stopped" and trial.retries == 1
    assert [j.state for j in trial.jobs] == ["expired", "done"]
    resumed = agents.events("start")[1]
    assert resumed["from_resource"] == 3 and resumed["checkpoint"].endswith("step-3.txt")
    second_job = resumed["job_id"]
    again = sorted(s for s in reported_first if s > 3)
    assert again, "the first run was killed before it passed its checkpoint"
    superseded = [r for r in trial.reports if r.superseded_by_job_id is not None]
    assert [(r.step, r.job_id, r.superseded_by_job_id) for r in superseded] == [
        (step, started["job_id"], second_job) for step in again
    ]
    for r in superseded:  # the first run's values, kept
        assert r.value == pytest.approx(reported_first[r.step])
    current = {r.step: r for r in trial.reports if r.superseded_by_job_id is None}
    assert sorted(current) == list(range(1, 9))
    assert all(current[step].job_id == second_job for step in again)


def test_agent_stop_decision_ends_the_command_within_two_seconds(
    shared_server: Server, agents: Agents
) -> None:
    server = shared_server
    doc = small_document(name="agent-stop", budget={"max_trials": 1}, lease_ttl_s=3)
    with server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(server, experiment.id, "--exit-when-done", IGNORE_STOP="1")
        agents.wait_for(lambda: bool(agents.events("report")), 30, "a report")
        started = agents.events("start")[0]
        assert _alive(started["pid"])
        client.stop_trial(started["trial_id"])
        stopped_at = time.monotonic()
        agents.wait_for(lambda: not _alive(started["pid"]), 5, "the command to end")
        elapsed = time.monotonic() - stopped_at
        assert agent.wait(30) == 0
        trial = client.get_trial(started["trial_id"])
    assert elapsed < 2.0, f"the command ran {elapsed:.2f} s after the stop"
    assert trial.state == "stopped"
    assert re.search(
        rf"(?m)^\d\d:\d\d:\d\d slot 0: {experiment.id}/0 stopped by hand \[", agents.output()
    ), agents.output()


def test_agent_sigterm_terminates_commands_releases_jobs_and_exits_zero(
    shared_server: Server, agents: Agents
) -> None:
    server = shared_server
    doc = small_document(name="agent-term", budget={"max_trials": 1}, lease_ttl_s=30)
    with server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(server, experiment.id, "--grace-s", "2", STEP_S="5")
        agents.wait_for(lambda: bool(agents.events("start")), 30, "the command to start")
        started = agents.events("start")[0]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        assert not _alive(started["pid"])
        trial = client.get_trial(started["trial_id"])
    assert trial.state == "pending"  # queued again for another worker
    assert trial.retries == 0  # released, not failed: no retry spent
    released = [j for j in trial.jobs if j.id == started["job_id"]]
    assert released
    assert released[0].state == "released"
    out = agents.output()
    assert f"slot 0: {experiment.id}/0 released (the worker is leaving): queued again [" in out
    assert out.rstrip().endswith("worker exits after 1 job (1 released): SIGTERM received"), out


def test_agent_survives_a_server_restart(server_factory: ServerFactory, agents: Agents) -> None:
    server = server_factory()
    # Rungs at 3 and 9: the first job reports 3 steps; the server dies after its second.
    doc = small_document(
        name="agent-restart",
        budget={"max_trials": 3},
        lease_ttl_s=20,
        scheduler={"type": "asha", "eta": 3, "min_resource": 3, "max_resource": 9},
    )
    with server.client() as client:
        experiment = client.submit(doc)
    agent = agents.start(server, experiment.id, "--exit-when-done", STEP_S="0.3")
    agents.wait_for(lambda: len(agents.events("report")) >= 2, 30, "two reports")
    script = agents.events("start")[0]["pid"]
    server.kill()
    time.sleep(1.0)
    assert agent.poll() is None and _alive(script)  # both wait for the server
    server.start()
    assert agent.wait(90) == 0
    with server.client() as client:
        info = client.get_experiment(experiment.id)
        trials = client.list_trials(experiment.id).items
    assert info.state == "completed"
    assert all(t.state in ("completed", "stopped", "paused") for t in trials), trials
    assert not any(t.state == "failed" for t in trials)
    assert all(t.retries == 0 for t in trials)  # the job in flight went on: no re-run


def test_agent_sends_the_output_tail_and_fails_on_non_zero_exit(
    shared_server: Server, agents: Agents
) -> None:
    server = shared_server
    doc = small_document(name="agent-exit", budget={"max_trials": 1}, lease_ttl_s=30, max_retries=0)
    with server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(
            server, experiment.id, "--exit-when-done", NO_COMPLETE="1", EXIT_CODE="3"
        )
        assert agent.wait(60) == 0
        started = agents.events("start")[0]
        trial = client.get_trial(started["trial_id"])
    assert trial.state == "failed"
    assert trial.output_tail is not None and "step 1 loss" in trial.output_tail
    assert any("exited with code 3" in str(d.reason) for d in trial.decisions), trial.decisions


def test_agent_completes_when_the_script_exits_zero_without_completing(
    shared_server: Server, agents: Agents
) -> None:
    server = shared_server
    doc = small_document(name="agent-auto", budget={"max_trials": 1}, lease_ttl_s=30)
    with server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(server, experiment.id, "--exit-when-done", NO_COMPLETE="1")
        assert agent.wait(60) == 0
        info = client.get_experiment(experiment.id)
    assert info.state == "completed"
    assert info.progress.trials_by_state.get("failed", 0) == 0


def test_agent_without_experiment_exits_when_no_experiment_is_left(
    server_factory: ServerFactory, agents: Agents
) -> None:
    server = server_factory()
    doc = small_document(name="agent-any", budget={"max_trials": 2}, lease_ttl_s=30)
    with server.client() as client:
        experiment = client.submit(doc)
    log = (agents.tmp_path / "any.log").open("wb")
    agent = subprocess.Popen(
        tuner_command(
            "worker",
            "--server",
            server.url,
            "--token",
            ADMIN_TOKEN,
            "--gpus",
            "none",
            "--poll-s",
            "1",
            "--checkpoint-root",
            str(agents.tmp_path / "ck"),
            "--exit-when-done",
            "--",
            PYTHON,
            STEPS,
        ),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUN_LOG": str(agents.run_log)},
    )
    agents.started.append(agent)
    assert agent.wait(60) == 0
    with server.client() as client:
        assert client.get_experiment(experiment.id).state == "completed"


def _worker(client: Client, worker_id: str) -> WorkerOut:
    found = [w for w in client.list_workers(limit=500).items if w.worker_id == worker_id]
    assert len(found) == 1, [w.worker_id for w in client.list_workers(limit=500).items]
    return found[0]


def test_agent_says_a_line_per_job_start_and_end_and_why_it_exits(
    shared_server: Server, agents: Agents, tmp_path: Path
) -> None:
    server = shared_server
    doc = small_document(  # the stopping form: some trials run to the end, some are stopped
        name="agent-lines", budget={"max_trials": 4}, lease_ttl_s=30,
        scheduler={"type": "asha", "form": "stopping", "eta": 3, "min_resource": 1,
                   "max_resource": 9},
    )
    no_smi = tmp_path / "bin"  # PATH without nvidia-smi: GPU use unknown
    no_smi.mkdir()
    with server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(
            server, experiment.id, "--exit-when-done", "--slots", "2", "--worker-id", "lines-1",
            PATH=str(no_smi),
        )
        assert agent.wait(120) == 0, agents.output()
        trials = client.list_trials(experiment.id).items
        jobs = [
            (f"{experiment.id}/{t.number}", j.from_resource, j.to_resource)
            for t in trials
            for j in client.get_trial(t.id).jobs
        ]
        worker = _worker(client, "lines-1")
    out = agents.output()
    assert f"worker lines-1: serving experiment {experiment.id} of {server.url}, 2 CPU slots" in out
    starts = START_LINE.findall(out)
    ends = END_LINE.findall(out)
    assert len(starts) == len(ends) == len(jobs) >= len(trials), out
    assert sorted((trial, int(a), int(b)) for _, trial, a, b in starts) == sorted(jobs)
    by_trial = {f"{experiment.id}/{t.number}": t for t in trials}
    for _, trial, outcome in ends:
        assert outcome not in ("failed", "lease lost"), out
        if outcome == "completed":  # with its final value
            assert by_trial[trial].state == "completed"
            value = by_trial[trial].last_value
            assert value is not None
            assert f"{trial} completed: reached the maximum resource (9), loss {value:.6g} [" in out
    completed = [t for t in trials if t.state == "completed"]
    assert completed and len(completed) == sum(1 for e in ends if e[2] == "completed"), out
    assert re.search(
        rf"worker exits after {len(jobs)} jobs \([^)]*\): experiment {experiment.id} is over$",
        out.rstrip(),
    ), out[-500:]
    # The exit said so: offline at once, with its count and no GPU readings (no nvidia-smi).
    assert (worker.state, worker.jobs_done, worker.gpu_stats) == ("offline", len(jobs), None)



def test_agent_shows_a_crashing_commands_last_lines_as_soon_as_it_fails(
    shared_server: Server, agents: Agents
) -> None:
    server = shared_server
    doc = small_document(
        name="agent-crash", budget={"max_trials": 1}, lease_ttl_s=30, max_retries=0
    )
    with server.client() as client:
        experiment = client.submit(doc)
    agent = agents.start(server, experiment.id, script=CRASH)
    # Said while the agent runs on (no --exit-when-done), not when it exits.
    agents.wait_for(lambda: "is over; waiting for work" in agents.output(), 60, "the over note")
    assert agent.poll() is None
    out = agents.output()
    assert re.search(
        rf"(?m)^\d\d:\d\d:\d\d slot 0: {experiment.id}/0 failed: the command ended with exit "
        r"code 1; the trial failed, no retry left \[[0-9.ms]+\]\n"
        r"    \| loading the data\.\.\.\n"
        r"    \| Traceback \(most recent call last\):\n"
        r"(    \| .*\n)*"
        r"    \| ModuleNotFoundError: No module named 'tuner_test_missing_module'\n",
        out,
    ), out
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    assert agents.output().rstrip().endswith(
        "worker exits after 1 job (1 failed): SIGTERM received"
    ), agents.output()[-500:]


def test_agent_exit_when_done_leaves_when_the_service_pauses_its_experiment(
    shared_server: Server, agents: Agents
) -> None:
    """A command that always fails: after ``pause_after_failures`` failed jobs the service
    pauses the experiment, and a worker with --exit-when-done leaves (exit 1, saying why and
    what to do) instead of waiting for a resume forever."""
    doc = small_document(
        name="agent-breaker", budget={"max_trials": 6}, lease_ttl_s=30, max_retries=0,
        pause_after_failures=2,
    )
    with shared_server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(shared_server, experiment.id, "--exit-when-done", script=CRASH)
        assert agent.wait(120) == 1, agents.output()
        assert client.get_experiment(experiment.id).state == "paused"
    out = " ".join(agents.output().split())
    assert f"experiment {experiment.id} paused by the service: the last 2 jobs failed" in out, out
    assert "start it again with the fixed command after " \
        f"`tuner resume {experiment.id}`" in out, out


def test_agent_quiet_on_gpus_sends_their_readings(
    shared_server: Server, agents: Agents, tmp_path: Path
) -> None:
    server = shared_server
    smi = tmp_path / "smi"
    smi.mkdir()
    smi_printing_samples(smi)
    doc = small_document(name="agent-gpus", budget={"max_trials": 2}, lease_ttl_s=30)
    with server.client() as client:
        experiment = client.submit(doc)
        agent = agents.start(
            server, experiment.id, "--exit-when-done", "--quiet", "--worker-id", "gpu-box-7",
            gpus="0,2", PATH=f"{smi}:/usr/bin:/bin",
        )
        assert agent.wait(120) == 0, agents.output()
        worker = _worker(client, "gpu-box-7")
    out = agents.output()
    assert f"worker gpu-box-7: serving experiment {experiment.id} of {server.url}, 2 GPU slots " \
        "(0, 2)" in out
    assert not START_LINE.search(out) and not END_LINE.search(out), out
    assert re.search(r"worker exits after \d+ jobs? \(", out), out
    assert {e["cuda"] for e in agents.events("start")} <= {"0", "2"}
    assert worker.gpus == [
        "0: NVIDIA H100 80GB HBM3, 81559 MiB", "2: NVIDIA A100-SXM4-40GB, 40960 MiB"
    ]
    expected = [s for s in parse_gpu_stats(SMI_STATS) if s["index"] in (0, 2)]
    assert [s.model_dump() for s in worker.gpu_stats or []] == expected
    assert worker.state == "offline" and worker.jobs_done >= 2
