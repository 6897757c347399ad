"""The job protocol through the app in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text, update

from api.settings import Settings
from tests.api.conftest import Api, _open_api
from tests.conftest import DB_PARAMS
from tuner import coordinator
from tuner.domain import DecisionKind
from tuner.storage.database import make_session_factory
from tuner.storage.models import ExperimentRow
from tuner.storage.sql import open_store


def _run_job(api: Api, job: dict, value_at: float = 0.5) -> dict:
    for step in range(job["from_resource"] + 1, job["to_resource"] + 1):
        answer = api.post(
            f"/jobs/{job['job_id']}/reports",
            {"lease_token": job["lease_token"], "step": step, "value": value_at / step},
        )
        assert answer.status_code == 200, answer.text
    answer = api.post(f"/jobs/{job['job_id']}/complete", {"lease_token": job["lease_token"]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_protocol_claim_report_complete(api: Api) -> None:
    experiment = api.create_experiment()
    answer = api.claim(experiment["id"], worker_id="w1")
    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert job["from_resource"] == 0 and job["to_resource"] == 1
    assert job["lease_expires_at"].endswith("Z") or "+00:00" in job["lease_expires_at"]
    decision = _run_job(api, job)
    assert decision["decision"] == "pause"
    trial = api.get(f"/trials/{job['trial_id']}").json()
    assert [r["step"] for r in trial["reports"]] == [1]
    assert trial["state"] == "paused"
    assert trial["decisions"][-1]["kind"] == "pause"


def test_protocol_runs_whole_experiment(api: Api) -> None:
    experiment = api.create_experiment()
    seen_jobs = set()
    for _ in range(200):
        answer = api.claim(experiment["id"], worker_id="w1")
        if answer.status_code == 410:
            break
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["job_id"] not in seen_jobs
        seen_jobs.add(job["job_id"])
        _run_job(api, job, value_at=job["trial_number"] + 1.0)
    else:
        raise AssertionError("the experiment never ended")
    out = api.get(f"/experiments/{experiment['id']}").json()
    assert out["state"] == "completed"
    assert out["progress"]["best"]["trial_number"] == 0
    rungs = api.get(f"/experiments/{experiment['id']}/rungs").json()
    bottom = next(r for r in rungs["items"] if r["rung"] == 0)
    assert bottom["n_results"] == 12 and bottom["top_k"] == 4
    assert math.isclose(bottom["promotable_value"], 4.0)  # 4th best value at resource 1
    top = max(rungs["items"], key=lambda r: r["rung"])  # at R: nothing is promoted from it
    assert top["n_results"] >= 1 and top["top_k"] == 0 and top["promotable_value"] is None
    trials = api.get(f"/experiments/{experiment['id']}/trials", order_by="value").json()
    assert trials["total"] == 12 and trials["items"][0]["number"] == 0
    curves = api.get(f"/experiments/{experiment['id']}/curves").json()
    assert curves["curves"][0]["trial_number"] == 0


def test_report_idempotent_and_conflict(api: Api) -> None:
    experiment = api.create_experiment()
    job = api.claim(experiment["id"]).json()
    body = {"lease_token": job["lease_token"], "step": 1, "value": 0.25}
    first = api.post(f"/jobs/{job['job_id']}/reports", body)
    again = api.post(f"/jobs/{job['job_id']}/reports", body)
    other = api.post(f"/jobs/{job['job_id']}/reports", {**body, "value": 0.5})
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 409)
    assert other.json()["error"] == "duplicate_report"


def test_report_stale_token_409(api: Api) -> None:
    experiment = api.create_experiment()
    job = api.claim(experiment["id"]).json()
    answer = api.post(
        f"/jobs/{job['job_id']}/reports", {"lease_token": "nope", "step": 1, "value": 1.0}
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == "lease_expired"


def test_report_non_finite_value_kind_stops(api: Api) -> None:
    experiment = api.create_experiment()
    job = api.claim(experiment["id"]).json()
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": 1, "value_kind": "nan"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] == "stop"
    trial = api.get(f"/trials/{job['trial_id']}").json()
    assert trial["reports"][0]["value"] is None
    assert trial["reports"][0]["value_kind"] == "nan"


def _report(api: Api, job: dict, step: int, value: float, **extra: object) -> dict:
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": step, "value": value, **extra},
    )
    assert answer.status_code == 200, answer.text
    body: dict = answer.json()
    return body


STOPPING = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9, "form": "stopping"}
NEXT = {"next": {"worker_id": "w-next"}}


def test_a_report_that_stops_hands_out_the_next_job(api: Api) -> None:
    assert api.post("/workers", {"worker_id": "w-next", "host": "box"}).status_code == 200
    experiment = api.create_experiment(scheduler=STOPPING)
    jobs = [api.claim(experiment["id"], worker_id=f"w{i}").json() for i in range(3)]
    # Rung 0 (step 1) keeps the top max(1, n // 3): 0.3 alone is kept, 0.2 is then the best
    # of two; neither answer ends its job, so neither carries a next job.
    for job, value in zip(jobs[:2], [0.3, 0.2], strict=True):
        out = _report(api, job, 1, value, **NEXT)
        assert (out["decision"], out["next"]) == ("continue", None)
    # 0.9 is third of three: stopped, and the answer brings trial 3, leased to w-next.
    out = _report(api, jobs[2], 1, 0.9, **NEXT)
    assert out["decision"] == "stop" and out["reason"]["rung"] == 0
    following = out["next"]
    assert following is not None
    assert following["trial_number"] == 3 and following["experiment_id"] == experiment["id"]
    assert (following["from_resource"], following["to_resource"]) == (0, 9)
    assert _report(api, following, 1, 0.1)["decision"] == "continue"  # its lease holds
    assert api.get(f"/trials/{following['trial_id']}").json()["state"] == "running"
    holder = [w for w in api.get("/workers").json()["items"] if w["worker_id"] == "w-next"]
    assert holder and holder[0]["current_jobs"] == [following["job_id"]]
    text = api.client.get("/metrics").text
    assert 'tuner_claims_total{outcome="job"} 4.0' in text


def test_a_completion_hands_out_the_next_job(api: Api) -> None:
    experiment = api.create_experiment()  # promotion form: a completion pauses the trial
    job = api.claim(experiment["id"], worker_id="w1").json()
    _report(api, job, 1, 0.5)
    answer = api.post(
        f"/jobs/{job['job_id']}/complete", {"lease_token": job["lease_token"], **NEXT}
    )
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["decision"] == "pause"
    assert out["next"]["trial_number"] == 1 and out["next"]["job_id"] != job["job_id"]


def test_no_next_job_when_nothing_can_be_handed_out(api: Api) -> None:
    experiment = api.create_experiment(scheduler=STOPPING, budget={"max_trials": 1})
    job = api.claim(experiment["id"]).json()
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": 1, "value_kind": "nan", **NEXT},
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["decision"], answer.json()["next"]) == ("stop", None)
    # The budget was spent and no trial is active: the claim inside ended the experiment.
    assert api.get(f"/experiments/{experiment['id']}").json()["state"] == "completed"
    assert api.claim(experiment["id"]).status_code == 410


@pytest.fixture
def slow_recheck_api(settings: Settings) -> Iterator[Api]:
    """An app whose claims re-check the database only every 30 s."""
    yield from _open_api(settings.model_copy(update={"claim_recheck_s": 30.0}))


def test_long_poll_wakes_within_100ms_of_completion(slow_recheck_api: Api) -> None:
    """The wake comes from the completion in the same process, not from the periodic
    re-check (set to 30 s here): the waiting claim answers within 100 ms of the completion's
    answer (plus the claim's own transaction, bounded generously for a loaded CI box)."""
    import threading
    import time

    api = slow_recheck_api
    experiment = api.create_experiment(budget={"max_trials": 12, "max_concurrent": 1})
    first = api.claim(experiment["id"]).json()
    assert api.claim(experiment["id"]).status_code == 204  # max_concurrent reached
    got: dict = {}

    def wait() -> None:
        answer = api.claim(experiment["id"], wait_s=20)
        got["status"], got["at"] = answer.status_code, time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    api.post(f"/jobs/{first['job_id']}/reports",
             {"lease_token": first["lease_token"], "step": 1, "value": 1.0})
    api.post(f"/jobs/{first['job_id']}/complete", {"lease_token": first["lease_token"]})
    done_at = time.monotonic()
    waiter.join(25)
    assert got["status"] == 200
    assert got["at"] - done_at < 0.1 + 0.15  # wake (< 100 ms) + one claim transaction


def test_claims_from_any_experiment_and_actions(api: Api) -> None:
    a = api.create_experiment(name="a")
    b = api.create_experiment(name="b")
    assert api.post(f"/experiments/{a['id']}/pause", role="admin").json()["state"] == "paused"
    assert api.claim(a["id"]).status_code == 204
    answer = api.post("/claims", {"worker_id": "w"})
    assert answer.status_code == 200 and answer.json()["experiment_id"] == b["id"]
    api.post(f"/experiments/{a['id']}/resume", role="admin")
    ids = {api.post("/claims", {}).json()["experiment_id"] for _ in range(4)}
    assert ids == {a["id"], b["id"]}
    assert api.post(f"/experiments/{b['id']}/cancel", role="admin").json()["state"] == (
        "cancelled"
    )
    assert api.claim(b["id"]).status_code == 410
    resumed = api.post(f"/experiments/{b['id']}/resume", role="admin")
    assert resumed.status_code == 409 and resumed.json()["error"] == "invalid_transition"


def test_cancel_answers_stop_at_next_report(api: Api) -> None:
    experiment = api.create_experiment()
    job = api.claim(experiment["id"]).json()
    api.post(f"/experiments/{experiment['id']}/cancel", role="admin")
    answer = api.post(f"/jobs/{job['job_id']}/heartbeat", {"lease_token": job["lease_token"]})
    assert answer.json()["decision"] == "stop"


def test_stop_trial_by_hand(api: Api) -> None:
    experiment = api.create_experiment()
    job = api.claim(experiment["id"]).json()
    stopped = api.post(f"/trials/{job['trial_id']}/stop", role="admin")
    assert stopped.status_code == 200 and stopped.json()["stop_requested"] is True
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": 1, "value": 1.0},
    )
    assert answer.json()["decision"] == "stop"
    assert api.get(f"/trials/{job['trial_id']}").json()["state"] == "stopped"


def test_fail_requeues_then_fails(api: Api) -> None:
    experiment = api.create_experiment(max_retries=1)
    job = api.claim(experiment["id"]).json()
    first = api.post(f"/jobs/{job['job_id']}/fail", {"lease_token": job["lease_token"]})
    assert first.json()["trial_state"] == "pending"
    again = api.claim(experiment["id"]).json()
    assert again["trial_id"] == job["trial_id"] and again["job_id"] != job["job_id"]
    second = api.post(f"/jobs/{again['job_id']}/fail", {"lease_token": again["lease_token"]})
    assert second.json()["trial_state"] == "failed"


def test_workers_output_and_metrics(api: Api) -> None:
    registered = api.post("/workers", {"worker_id": "gpu-box", "host": "box", "gpus": ["0"]})
    assert registered.status_code == 200
    experiment = api.create_experiment()
    job = api.claim(experiment["id"], worker_id="gpu-box").json()
    workers = api.get("/workers").json()
    assert workers["items"][0]["current_jobs"] == [job["job_id"]]
    for _ in range(3):
        answer = api.post(
            f"/jobs/{job['job_id']}/output", {"lease_token": job["lease_token"], "text": "x" * 7000}
        )
    assert answer.json()["n_chars"] == 16 * 1024
    assert len(api.get(f"/trials/{job['trial_id']}").json()["output_tail"]) == 16 * 1024
    text = api.client.get("/metrics").text
    assert 'tuner_claims_total{outcome="job"} 1.0' in text
    assert "tuner_http_request_duration_seconds_bucket" in text
    assert "tuner_db_transaction_duration_seconds_bucket" in text


def test_reaper_expires_lease_and_requeues(api: Api) -> None:
    from api.reaper import reap_once

    experiment = api.create_experiment(lease_ttl_s=1)
    job = api.claim(experiment["id"], worker_id="w").json()
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    real = runtime.clock
    runtime.clock = lambda: real() + 5
    try:
        assert [j.id for j in reap_once(runtime)] == [job["job_id"]]
        again = api.claim(experiment["id"]).json()
    finally:
        runtime.clock = real
    assert again["trial_id"] == job["trial_id"]
    stale = api.post(f"/jobs/{job['job_id']}/heartbeat", {"lease_token": job["lease_token"]})
    assert stale.status_code == 409


def test_generated_admin_token_logged_once(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging

    from api.main import create_app
    from api.settings import Settings

    url = f"sqlite:///{tmp_path}/first.db"
    logger = logging.getLogger("api")
    logger.addHandler(caplog.handler)
    try:
        create_app(Settings(database_url=url, reaper_interval_s=0))
        create_app(Settings(database_url=url, reaper_interval_s=0))
    finally:
        logger.removeHandler(caplog.handler)
    created = [r for r in caplog.records if "admin_token_created" in r.getMessage()]
    assert len(created) == 1


def test_worker_token_from_the_environment_has_the_worker_role(db_url: str) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings

    settings = Settings(
        database_url=db_url, admin_token="admin-t", worker_token="worker-t", reaper_interval_s=0
    )
    with TestClient(create_app(settings)) as client:
        doc = {"name": "w", "space": {"x": {"type": "float", "low": 0, "high": 1}},
               "scheduler": {"type": "asha", "max_resource": 9}}
        worker = {"Authorization": "Bearer worker-t"}
        assert client.post("/api/v1/experiments", json=doc, headers=worker).status_code == 403
        created = client.post(
            "/api/v1/experiments", json=doc, headers={"Authorization": "Bearer admin-t"}
        )
        claim = client.post(f"/api/v1/experiments/{created.json()['id']}/claims", json={},
                            headers=worker)
        assert claim.status_code == 200
    with TestClient(create_app(settings)) as client:  # a restart stores it only once
        assert client.get("/api/v1/experiments", headers=worker).status_code == 200


def test_a_retry_supersedes_the_steps_an_ended_job_reported(api: Api) -> None:
    """A lost worker's job is queued again from the last checkpoint; its retry trains the
    steps after it again, with other values (real training is not deterministic). The
    retry's values become the current ones, the old ones stay as superseded history, and
    the rung judgement made from the old value stands."""
    experiment = api.create_experiment(scheduler=STOPPING, max_retries=1)
    first = api.claim(experiment["id"], worker_id="w1").json()
    for step, value in [(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.25)]:
        checkpoint = "ckpt-2" if step == 2 else None
        extra = {"checkpoint": checkpoint} if checkpoint else {}
        assert _report(api, first, step, value, **extra)["decision"] == "continue"
    # The worker gives up (it would be the same after a lost lease): one retry, from step 2.
    failed = api.post(
        f"/jobs/{first['job_id']}/fail", {"lease_token": first["lease_token"], "error": "oom"}
    )
    assert failed.status_code == 200 and failed.json()["trial_state"] == "pending"
    retry = api.claim(experiment["id"], worker_id="w2").json()
    assert (retry["trial_id"], retry["from_resource"]) == (first["trial_id"], 2)
    assert retry["checkpoint"] == "ckpt-2"
    for step, value in [(3, 0.35), (4, 0.27), (5, 0.2)]:
        assert _report(api, retry, step, value)["decision"] == "continue"
    # Within one job a step is stored once: another value is still a conflict.
    again = api.post(
        f"/jobs/{retry['job_id']}/reports",
        {"lease_token": retry["lease_token"], "step": 3, "value": 0.9},
    )
    assert again.status_code == 409 and again.json()["error"] == "duplicate_report"
    trial = api.get(f"/trials/{first['trial_id']}").json()
    rows = [
        (r["step"], r["value"], r["job_id"], r["superseded_by_job_id"]) for r in trial["reports"]
    ]
    a, b = first["job_id"], retry["job_id"]
    assert rows == [
        (1, 0.5, a, None), (2, 0.4, a, None),
        (3, 0.3, a, b), (3, 0.35, b, None),
        (4, 0.25, a, b), (4, 0.27, b, None),
        (5, 0.2, b, None),
    ]
    assert trial["state"] == "running" and trial["last_value"] == 0.2
    # Rung 1 (resource 3) was judged from the first job's 0.3: that judgement stands.
    rung_1 = [r for r in trial["rung_values"] if r["rung"] == 1]
    assert [r["value"] for r in rung_1] == [0.3]


def test_a_stale_token_is_refused_for_a_step_it_stored(api: Api) -> None:
    """After a release, the old token's repeat of a stored report is refused (409), not
    answered ``continue`` as if the worker still held the job."""
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"]).json()
    body = {"lease_token": job["lease_token"], "step": 1, "value": 0.5}
    assert api.post(f"/jobs/{job['job_id']}/reports", body).status_code == 200
    released = api.post(f"/jobs/{job['job_id']}/release", {"lease_token": job["lease_token"]})
    assert released.status_code == 200
    answer = api.post(f"/jobs/{job['job_id']}/reports", body)
    assert answer.status_code == 409 and answer.json()["error"] == "lease_expired"


def test_a_repeat_after_the_decision_that_ended_the_job_gets_that_decision(api: Api) -> None:
    """A report whose answer (a stop) was lost is sent again: same answer, even though the
    stop ended the job's lease."""
    experiment = api.create_experiment(scheduler=STOPPING)
    jobs = [api.claim(experiment["id"]).json() for _ in range(3)]
    for job, value in zip(jobs, [0.3, 0.2, 0.9], strict=True):
        _report(api, job, 1, value)
    body = {"lease_token": jobs[2]["lease_token"], "step": 1, "value": 0.9}
    answer = api.post(f"/jobs/{jobs[2]['job_id']}/reports", body)
    assert answer.status_code == 200 and answer.json()["decision"] == "stop"


def test_output_is_kept_only_while_the_job_may_speak_for_its_trial(api: Api) -> None:
    """Output is appended while the lease is live and after a decision ended the job (the
    script's last lines); after a release the job is queued again and its old worker's
    output is refused."""
    experiment = api.create_experiment(scheduler=STOPPING)
    jobs = [api.claim(experiment["id"]).json() for _ in range(4)]

    def output(job: dict, text: str) -> int:
        body = {"lease_token": job["lease_token"], "text": text}
        return api.post(f"/jobs/{job['job_id']}/output", body).status_code

    assert output(jobs[0], "epoch 1\n") == 200
    for job, value in zip(jobs[:3], [0.3, 0.2, 0.9], strict=True):
        _report(api, job, 1, value)  # the third is stopped at rung 0
    assert output(jobs[2], "stopped: bye\n") == 200
    token = {"lease_token": jobs[3]["lease_token"]}
    released = api.post(f"/jobs/{jobs[3]['job_id']}/release", token)
    assert released.status_code == 200
    assert output(jobs[3], "late line\n") == 409
    stopped = api.get(f"/trials/{jobs[2]['trial_id']}").json()
    assert stopped["output_tail"] == "stopped: bye\n"
    assert api.get(f"/trials/{jobs[3]['trial_id']}").json()["output_tail"] in (None, "")


def test_one_broken_experiment_does_not_break_the_shared_claim_route(api: Api) -> None:
    """An experiment whose claims fail (here its stored document has a range beyond today's
    limits, as one stored by an older version may) is skipped by ``POST /claims``: the
    other experiments' work is still handed out, and the route never answers 5xx."""
    broken = api.create_experiment(name="broken")
    healthy = api.create_experiment(name="healthy")
    document = dict(broken["config"], space={"n": {"type": "int", "low": 0, "high": 10**30}})
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    with runtime.engine.begin() as connection:
        connection.execute(
            update(ExperimentRow).where(ExperimentRow.id == broken["id"]).values(config=document)
        )
    handed = []
    for _ in range(4):  # the round robin starts at each experiment in turn
        answer = api.post("/claims", {"worker_id": "w"})
        assert answer.status_code == 200, answer.text
        handed.append(answer.json()["experiment_id"])
    assert set(handed) == {healthy["id"]}
    own = api.claim(broken["id"])
    assert 400 <= own.status_code < 500 and "space.n" in own.json()["detail"], own.text


def _fail(api: Api, job: dict) -> None:
    body = {"lease_token": job["lease_token"], "error": "ModuleNotFoundError: No module named 'x'"}
    assert api.post(f"/jobs/{job['job_id']}/fail", body).status_code == 200


def test_jobs_failing_in_a_row_pause_the_experiment_until_resumed(api: Api) -> None:
    """A script that cannot run fails every job: after ``pause_after_failures`` failures in
    a row with no success the experiment pauses itself, says why, and hands out nothing;
    a resume clears the reason and starts the count again."""
    experiment = api.create_experiment(pause_after_failures=3, max_retries=10)
    eid = experiment["id"]
    # A success between failures resets the count: fail, fail, done, fail, fail.
    for _ in range(2):
        _fail(api, api.claim(eid).json())
    done = api.claim(eid).json()
    _report(api, done, 1, 0.5)
    completed = api.post(f"/jobs/{done['job_id']}/complete", {"lease_token": done["lease_token"]})
    assert completed.status_code == 200
    for _ in range(2):
        _fail(api, api.claim(eid).json())
    assert api.get(f"/experiments/{eid}").json()["state"] == "running"
    _fail(api, api.claim(eid).json())  # the third in a row
    paused = api.get(f"/experiments/{eid}").json()
    assert paused["state"] == "paused"
    assert "last 3 jobs failed" in paused["state_reason"]
    assert "No module named 'x'" in paused["state_reason"]
    assert api.claim(eid).status_code == 204  # nothing is handed out while paused
    resumed = api.post(f"/experiments/{eid}/resume", role="admin").json()
    assert (resumed["state"], resumed["state_reason"]) == ("running", None)
    _fail(api, api.claim(eid).json())  # the count starts again after a resume
    assert api.get(f"/experiments/{eid}").json()["state"] == "running"


def test_the_breaker_can_be_turned_off(api: Api) -> None:
    experiment = api.create_experiment(pause_after_failures=0, max_retries=20)
    for _ in range(12):  # beyond the default of 10
        _fail(api, api.claim(experiment["id"]).json())
    assert api.get(f"/experiments/{experiment['id']}").json()["state"] == "running"


def test_a_completion_sent_again_after_a_promotion_gets_its_pause(api: Api) -> None:
    """The first answer was ``pause``; the trial was then promoted and runs again. A resent
    completion is answered ``pause`` again (the job's own decision), not ``continue`` (the
    trial's state now), which would tell the worker to train a job that is over."""
    experiment = api.create_experiment()
    jobs = [api.claim(experiment["id"]).json() for _ in range(3)]
    for job, value in zip(jobs, [0.1, 0.5, 0.9], strict=True):
        _report(api, job, 1, value)
        body = {"lease_token": job["lease_token"]}
        assert api.post(f"/jobs/{job['job_id']}/complete", body).json()["decision"] == "pause"
    promoted = api.claim(experiment["id"]).json()  # the best of three goes on
    assert (promoted["trial_id"], promoted["rung"]) == (jobs[0]["trial_id"], 1)
    again = api.post(f"/jobs/{jobs[0]['job_id']}/complete", {"lease_token": jobs[0]["lease_token"]})
    assert again.status_code == 200 and again.json()["decision"] == "pause", again.text
    assert again.json()["reason"]["rung"] == 0
    repeat = api.post(
        f"/jobs/{jobs[0]['job_id']}/reports",
        {"lease_token": jobs[0]["lease_token"], "step": 1, "value": 0.1},
    )
    assert repeat.status_code == 200 and repeat.json()["decision"] == "pause"


@pytest.mark.parametrize("db_url", [DB_PARAMS[1]], indirect=True)
def test_a_completion_sent_again_while_the_first_is_handled_gets_its_answer(api: Api) -> None:
    """PostgreSQL: the copy reads the job while the first copy holds the experiment's lock
    (uncommitted), waits for the lock, then finds the job ended. It answers what the first
    got, not 409 ``lease_expired``."""
    experiment = api.create_experiment()
    job = api.claim(experiment["id"]).json()
    _report(api, job, 1, 0.5)
    factory = make_session_factory(api.client.app.state.runtime.engine)  # type: ignore[attr-defined]
    answers: list[object] = []

    def copy() -> None:
        try:
            with factory.begin() as session:
                answers.append(coordinator.complete(
                    open_store(session), job["job_id"], job["lease_token"], time.time()
                ))
        except Exception as exc:  # noqa: BLE001 - asserted below
            answers.append(exc)

    with factory.begin() as first:
        decision = coordinator.complete(
            open_store(first), job["job_id"], job["lease_token"], time.time()
        )
        second = threading.Thread(target=copy)
        second.start()
        _wait_for_a_lock_wait(first)  # the copy read the job and waits for the lock
    second.join(60)
    assert decision.kind is DecisionKind.PAUSE
    assert [(a.kind, a.reason.rule, a.reason.rung) for a in answers] == [  # type: ignore[attr-defined]
        (DecisionKind.PAUSE, "await_promotion", 0)
    ], answers


def _wait_for_a_lock_wait(session: Any) -> None:
    """Until another backend of this database waits for a lock (no fixed sleep)."""
    deadline = time.monotonic() + 120
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    # Autocommit: each poll its own transaction, so pg_stat_activity is read afresh (within
    # one transaction PostgreSQL keeps the first snapshot of it).
    with session.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
        while not watcher.execute(query).scalar():
            assert time.monotonic() < deadline, "the second completion never waited"
            time.sleep(0.02)


def test_a_retrys_completion_supersedes_the_lost_jobs_value_at_its_end(api: Api) -> None:
    """The lost job reported ``to_resource`` and died before completing; the retry (from an
    earlier checkpoint) completes with its own value: stored, the old one superseded. A
    completion without a value is refused until the retry itself reported that step."""
    experiment = api.create_experiment(
        scheduler={"type": "asha", "eta": 3, "min_resource": 3, "max_resource": 9}
    )
    first = api.claim(experiment["id"]).json()
    assert first["to_resource"] == 3
    for step, value in [(1, 0.9), (2, 0.8), (3, 0.7)]:
        extra = {"checkpoint": "ckpt-1"} if step == 1 else {}
        _report(api, first, step, value, **extra)
    failed = api.post(f"/jobs/{first['job_id']}/fail", {"lease_token": first["lease_token"]})
    assert failed.status_code == 200
    retry = api.claim(experiment["id"]).json()
    assert (retry["trial_id"], retry["from_resource"]) == (first["trial_id"], 1)
    _report(api, retry, 2, 0.85)
    token = {"lease_token": retry["lease_token"]}
    bare = api.post(f"/jobs/{retry['job_id']}/complete", token)
    assert bare.status_code == 422 and bare.json()["error"] == "out_of_range", bare.text
    done = api.post(f"/jobs/{retry['job_id']}/complete", {**token, "value": 0.65})
    assert done.status_code == 200 and done.json()["decision"] == "pause", done.text
    trial = api.get(f"/trials/{first['trial_id']}").json()
    at_end = [(r["value"], r["job_id"], r["superseded_by_job_id"])
              for r in trial["reports"] if r["step"] == 3]
    assert at_end == [(0.7, first["job_id"], retry["job_id"]), (0.65, retry["job_id"], None)]
    assert [r["value"] for r in trial["rung_values"]] == [0.65]


def test_a_repeat_after_a_cancel_gets_the_cancels_stop(api: Api) -> None:
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"]).json()
    assert api.post(f"/experiments/{experiment['id']}/cancel", role="admin").status_code == 200
    body = {"lease_token": job["lease_token"], "step": 1, "value": 0.5}
    first = api.post(f"/jobs/{job['job_id']}/reports", body)
    again = api.post(f"/jobs/{job['job_id']}/reports", body)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json()["decision"] == again.json()["decision"] == "stop"


def test_a_jobs_output_is_refused_once_its_trial_went_on(api: Api) -> None:
    """A job paused at its rung keeps its output until the trial is promoted and a later
    job ends: then a late chunk of the first job's output would land after the later one's."""
    experiment = api.create_experiment()
    jobs = [api.claim(experiment["id"]).json() for _ in range(3)]
    for job, value in zip(jobs, [0.1, 0.5, 0.9], strict=True):
        _report(api, job, 1, value)
        api.post(f"/jobs/{job['job_id']}/complete", {"lease_token": job["lease_token"]})
    first = jobs[0]
    body = {"lease_token": first["lease_token"], "text": "last words\n"}
    assert api.post(f"/jobs/{first['job_id']}/output", body).status_code == 200
    promoted = api.claim(experiment["id"]).json()
    assert promoted["trial_id"] == first["trial_id"]
    assert api.post(f"/jobs/{first['job_id']}/output", body).status_code == 409
    _report(api, promoted, 3, 0.05)
    token = {"lease_token": promoted["lease_token"]}
    assert api.post(f"/jobs/{promoted['job_id']}/complete", token).json()["decision"] == "pause"
    assert api.post(f"/jobs/{first['job_id']}/output", body).status_code == 409  # rung 1 now
