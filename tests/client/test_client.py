"""The SDK against a real server: the job loop, decisions, stop, typed errors."""

from __future__ import annotations

import math
import threading
import time

import pytest

from tests.worker.live import Server, small_document
from tuner.client import Client, Decision, Job
from tuner.domain import DecisionKind
from tuner.errors import (
    AuthError,
    ClientError,
    ConfigError,
    Forbidden,
    LeaseExpired,
    MetricMismatch,
    NotFound,
    OutOfRange,
)


def loss_at(params: dict[str, object], step: int) -> float:
    lr = float(params["lr"])  # type: ignore[arg-type]
    return abs(math.log10(lr) + 2.0) + 1.0 / step


def test_client_job_loop_runs_asha_to_completion(shared_server: Server) -> None:
    decisions: list[Decision] = []
    with shared_server.client() as client:
        experiment = client.submit(
            small_document(name="sdk-loop", lease_ttl_s=30, budget={"max_trials": 9})
        )
        for job in experiment.jobs(worker_id="sdk-test", wait_s=2):
            assert isinstance(job, Job)
            with job:
                for step in range(job.from_resource + 1, job.to_resource + 1):
                    decisions.append(job.report(step, loss_at(job.params, step), epoch=step))
                    if job.should_stop:
                        break
                else:
                    decisions.append(job.complete())
        info = experiment.info()
        best = experiment.best_trial()
    assert info.state == "completed"
    assert info.progress.best is not None
    assert all(isinstance(d.kind, DecisionKind) for d in decisions)
    kinds = {d.kind for d in decisions}
    assert DecisionKind.PAUSE in kinds  # trials wait at rungs for promotion
    assert DecisionKind.COMPLETE in kinds  # at least one reached max_resource
    assert best is not None and best.state == "completed"


def test_client_job_loop_takes_next_jobs_from_answers(
    shared_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopped or completed job's answer brings the next job: the loop claims only when
    none came with it (and once more to hear 410)."""
    stopping = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9,
                "form": "stopping"}
    with shared_server.client() as client:
        claims = 0
        claim = client.claim

        def counting_claim(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            nonlocal claims
            claims += 1
            return claim(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(client, "claim", counting_claim)
        experiment = client.submit(small_document(
            name="sdk-next", lease_ttl_s=30, scheduler=stopping, budget={"max_trials": 9}
        ))
        trials = []
        for job in experiment.jobs(worker_id="sdk-next", wait_s=2):
            trials.append(job.trial_number)
            with job:
                for step in range(job.from_resource + 1, job.to_resource + 1):
                    job.report(step, loss_at(job.params, step))
                    if job.should_stop:
                        break
                else:
                    job.complete()
        assert experiment.info().state == "completed"
    assert sorted(trials) == list(range(9))  # each trial once
    assert claims < len(trials)  # most jobs came with an answer, not a claim


def test_client_job_loop_releases_a_next_job_it_does_not_yield(shared_server: Server) -> None:
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="sdk-release", lease_ttl_s=30))
        loop = experiment.jobs(worker_id="sdk-release", wait_s=2)
        first = next(loop)
        first.report(1, 0.5)
        assert first.complete().kind is DecisionKind.PAUSE
        handed = first.next_job  # came with the completion's answer
        assert handed is not None and handed.trial_number == 1
        loop.close()  # leave the loop: the job it was handed goes back to the queue
        assert client.get_trial(handed.trial_id).state == "pending"
        again = client.claim(experiment.id, worker_id="sdk-release")
        assert again.job is not None and again.job.trial_id == handed.trial_id
        Job(client, again.job, heartbeat=False).fail("done with the test")
        experiment.cancel()


def test_client_stop_trial_sets_should_stop_through_heartbeat(shared_server: Server) -> None:
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="sdk-stop", lease_ttl_s=3))
        answer = client.claim(experiment.id, worker_id="sdk-stop", wait_s=5)
        assert answer.job is not None
        job = Job(client, answer.job)
        try:
            job.report(1, 0.5)
            client.stop_trial(job.trial_id)
            deadline = time.monotonic() + 5
            while not job.should_stop and time.monotonic() < deadline:
                time.sleep(0.05)
            assert job.should_stop  # the heartbeat (every ~1 s) heard "stop"
            assert job.is_closed
            assert client.get_trial(job.trial_id).state == "stopped"
        finally:
            job.close()
        experiment.cancel()


def test_client_report_answers_stop_and_non_finite_travels_as_value_kind(
    shared_server: Server,
) -> None:
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="sdk-nan", lease_ttl_s=30))
        answer = client.claim(experiment.id, wait_s=5)
        assert answer.job is not None
        job = Job(client, answer.job, heartbeat=False)
        decision = job.report(1, float("nan"))
        assert decision.kind is DecisionKind.STOP
        assert job.should_stop
        trial = client.get_trial(job.trial_id)
        assert trial.reports[0].value_kind == "nan"
        experiment.cancel()


def test_client_errors_are_typed(shared_server: Server) -> None:
    viewer = shared_server.token("viewer")
    with shared_server.client() as client:
        with pytest.raises(NotFound):
            client.get_experiment(999_999)
        experiment = client.submit(small_document(name="sdk-errors", lease_ttl_s=30))
        answer = client.claim(experiment.id, wait_s=5)
        assert answer.job is not None
        stale = Job(
            client, answer.job.model_copy(update={"lease_token": "not-the-token"}), heartbeat=False
        )
        with pytest.raises(LeaseExpired):
            stale.report(1, 0.5)
        assert stale.should_stop
        job = Job(client, answer.job, heartbeat=False)
        with pytest.raises(OutOfRange):
            job.report(answer.job.to_resource + 5, 0.5)
        with pytest.raises(ConfigError):
            client.create_experiment({"name": "x"})
        experiment.cancel()
    with Client(shared_server.url, "wrong-token") as client, pytest.raises(AuthError) as info:
        client.list_experiments()
    assert not isinstance(info.value, Forbidden)
    with Client(shared_server.url, viewer) as client:
        client.list_experiments()
        with pytest.raises(Forbidden):
            client.create_experiment(small_document())


def test_client_unreachable_server_says_what_to_do() -> None:
    from tests.server_process import free_port
    from tuner.client import RetryPolicy

    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, "t", retry=RetryPolicy(attempts=1)) as client,
        pytest.raises(ClientError) as info,
    ):
        client.list_experiments()
    assert url in info.value.detail
    assert "tuner server" in info.value.detail


def test_client_context_manager_fails_job_on_exception(shared_server: Server) -> None:
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="sdk-fail", lease_ttl_s=30))
        answer = client.claim(experiment.id, wait_s=5)
        assert answer.job is not None
        with pytest.raises(RuntimeError), Job(client, answer.job) as job:
            raise RuntimeError("boom in training")
        assert job.is_closed
        trial = client.get_trial(job.trial_id)
        assert trial.retries == 1 and trial.state == "pending"
        assert [j.state for j in trial.jobs if j.id == job.job_id] == ["failed"]
        experiment.cancel()


def test_client_heartbeat_thread_stops_with_the_job(shared_server: Server) -> None:
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="sdk-beat", lease_ttl_s=3))
        answer = client.claim(experiment.id, wait_s=5)
        assert answer.job is not None
        job = Job(client, answer.job)
        time.sleep(3.5)  # longer than the lease: only the heartbeat keeps it
        decision = job.report(1, 0.3)
        assert decision.kind in (DecisionKind.CONTINUE, DecisionKind.PAUSE)
        job.complete()
        beats = [t for t in threading.enumerate() if t.name == f"tuner-heartbeat-{job.job_id}"]
        for thread in beats:
            thread.join(2)
        assert job.is_closed and not any(t.is_alive() for t in beats)
        experiment.cancel()


def test_client_sends_what_the_strict_server_takes(shared_server: Server) -> None:
    """A float step (an epoch counter kept as a float) is sent as an integer, and a NUL in
    an error or a text metric as U+FFFD: the server refuses both as they are."""
    with shared_server.client() as client:
        experiment = client.submit(small_document(name="sdk-strict", lease_ttl_s=30))
        answer = client.claim(experiment.id, wait_s=5)
        assert answer.job is not None
        job = Job(client, answer.job, heartbeat=False)
        decision = client.report(job.job_id, job.lease_token, 1.0, 0.5, note="a\x00b")  # type: ignore[arg-type]
        assert decision.kind is DecisionKind.CONTINUE  # promotion form: judged at completion
        trial = client.get_trial(job.trial_id)
        assert [(r.step, r.value, r.metrics) for r in trial.reports] == [
            (1, 0.5, {"note": "a\ufffdb"})
        ]
        out = job.fail(RuntimeError("bad byte \x00 in a message"))
        assert out.trial_state == "pending"
        trial = client.get_trial(job.trial_id)
        assert trial.retries == 1
        experiment.cancel()


def test_client_job_knows_its_metric_and_a_wrong_one_is_refused(shared_server: Server) -> None:
    with shared_server.client() as client:
        experiment = client.submit(
            small_document(name="sdk-metric", metric="val_loss", mode="min", lease_ttl_s=30)
        )
        answer = client.claim(experiment.id, wait_s=5)
        assert answer.job is not None
        job = Job(client, answer.job, heartbeat=False)
        assert (job.metric, job.mode) == ("val_loss", "min")
        with pytest.raises(MetricMismatch) as info:
            job.report(1, 0.97, metric="accuracy")
        assert "optimises val_loss (min)" in str(info.value) and "accuracy" in str(info.value)
        assert isinstance(info.value, ConfigError)  # a mistake in the script, not the network
        assert not job.should_stop and not job.is_closed
        assert job.report(1, 0.5, metric="val_loss", acc=0.8).kind is DecisionKind.CONTINUE
        with pytest.raises(MetricMismatch):
            job.complete(metric="accuracy")
        reopened = Job(client, answer.job, heartbeat=False)
        assert reopened.complete(metric="val_loss").kind is DecisionKind.PAUSE
        trial = client.get_trial(answer.job.trial_id)
        assert [(r.step, r.value, r.metrics) for r in trial.reports] == [(1, 0.5, {"acc": 0.8})]
        experiment.cancel()


def test_client_trials_by_number_failures_and_export(shared_server: Server) -> None:
    with shared_server.client() as client:
        experiment = client.submit(
            small_document(name="sdk-numbers", lease_ttl_s=30, max_retries=0)
        )
        jobs = [client.claim(experiment.id, wait_s=5).job for _ in range(2)]
        assert all(job is not None for job in jobs)
        first, second = jobs
        assert first is not None and second is not None
        client.fail_job(first.job_id, first.lease_token, "the command exited with code 2\nboom")
        trial = client.get_trial_by_number(experiment.id, 1)
        assert (trial.id, trial.number) == (second.trial_id, 1)
        stopped = client.stop_trial_by_number(experiment.id, 1)
        assert stopped.id == second.trial_id and stopped.stop_requested
        with pytest.raises(NotFound, match=f"experiment {experiment.id} has no trial 5"):
            client.get_trial_by_number(experiment.id, 5)
        failures = client.failures(experiment.id)
        assert failures.total == 1
        [failure] = failures.items
        assert (failure.trial_number, failure.job_id) == (0, first.job_id)
        assert failure.outcome == "failed"
        assert failure.error.splitlines()[-1].startswith("boom")
        as_json = client.export(experiment.id, format="json")
        assert isinstance(as_json, dict)
        assert sorted(t["number"] for t in as_json["trials"]) == [0, 1]
        as_csv = client.export(experiment.id)
        assert isinstance(as_csv, str) and as_csv.startswith("number,state,")
        with pytest.raises(ConfigError, match="format is 'xml'"):
            client.export(experiment.id, format="xml")
        experiment.cancel()
