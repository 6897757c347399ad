"""A trial as people name it, ``EXP/NUM`` (its number in its experiment), and the latest
failures of an experiment, through the app on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api


@pytest.fixture
def api(shared_api: Api) -> Api:
    """Each test makes its own experiments; one app per database kind."""
    return shared_api


def _claim(api: Api, experiment_id: int, worker_id: str = "w") -> dict[str, Any]:
    answer = api.claim(experiment_id, worker_id=worker_id)
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def test_a_trial_is_found_by_its_number_in_its_experiment(api: Api) -> None:
    first, second = api.create_experiment(), api.create_experiment()
    ones = [_claim(api, first["id"]) for _ in range(3)]
    twos = [_claim(api, second["id"]) for _ in range(2)]
    # Trial 1 of the second experiment is not trial 1 of the first, nor the trial whose id is 1.
    got = api.get(f"/experiments/{second['id']}/trials/1")
    assert got.status_code == 200, got.text
    trial = got.json()
    assert trial["id"] == twos[1]["trial_id"] != ones[1]["trial_id"]
    assert (trial["experiment_id"], trial["number"]) == (second["id"], 1)
    assert trial == api.get(f"/trials/{twos[1]['trial_id']}").json()  # the same answer


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/experiments/{id}/trials/7", ["experiment {id} has no trial 7"]),
        ("/experiments/99999/trials/0", ["experiment 99999 does not exist"]),
    ],
    ids=["no-such-trial", "no-such-experiment"],
)
def test_an_unknown_trial_number_is_404_with_a_sentence(
    api: Api, path: str, words: list[str]
) -> None:
    experiment = api.create_experiment()
    _claim(api, experiment["id"])
    path = path.format(id=experiment["id"])
    for method, role in (("GET", "viewer"), ("POST", "admin")):
        url = f"/api/v1{path}" + ("/stop" if method == "POST" else "")
        answer = api.client.request(method, url, headers=api.as_(role))
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "not_found"
        for word in words:
            assert word.format(id=experiment["id"]) in answer.json()["detail"]


def test_stop_by_number_stops_that_trial_only(api: Api) -> None:
    first, second = api.create_experiment(), api.create_experiment()
    mine = _claim(api, first["id"])
    theirs = [_claim(api, second["id"]) for _ in range(2)]
    stopped = api.post(f"/experiments/{second['id']}/trials/1/stop", role="admin")
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["id"] == theirs[1]["trial_id"]
    assert stopped.json()["stop_requested"] is True
    # The same rule as the id route: the running trial hears stop at its next report.
    answer = api.post(
        f"/jobs/{theirs[1]['job_id']}/reports",
        {"lease_token": theirs[1]["lease_token"], "step": 1, "value": 1.0},
    )
    assert answer.json()["decision"] == "stop"
    assert api.get(f"/experiments/{second['id']}/trials/1").json()["state"] == "stopped"
    for other in (mine, theirs[0]):
        assert api.get(f"/trials/{other['trial_id']}").json()["stop_requested"] is False
    # Stopping a finished trial again: the same answer as the id route's (one rule).
    again = api.post(f"/experiments/{second['id']}/trials/1/stop", role="admin")
    by_id = api.post(f"/trials/{theirs[1]['trial_id']}/stop", role="admin")
    assert again.status_code == by_id.status_code == 409
    assert again.json() == by_id.json()


def test_stop_by_number_needs_an_admin(api: Api) -> None:
    experiment = api.create_experiment()
    _claim(api, experiment["id"])
    for role in ("viewer", "worker"):
        answer = api.post(f"/experiments/{experiment['id']}/trials/0/stop", role=role)
        assert answer.status_code == 403, answer.text
    assert api.get(f"/experiments/{experiment['id']}/trials/0").json()["stop_requested"] is False


TRACEBACK = "\n".join(
    ["the command exited with code 1", "Traceback (most recent call last):"]
    + [f'  File "train.py", line {i}, in step' for i in range(200)]
    + ["ValueError: lr must be positive"]
)


def test_failures_list_the_latest_failed_and_lost_jobs_with_their_error(api: Api) -> None:
    experiment = api.create_experiment(max_retries=1, pause_after_failures=0)
    eid = experiment["id"]
    first = _claim(api, eid, "w1")
    failed = api.post(
        f"/jobs/{first['job_id']}/fail", {"lease_token": first["lease_token"], "error": TRACEBACK}
    )
    assert failed.status_code == 200 and failed.json()["trial_state"] == "pending"
    retry = _claim(api, eid, "w2")
    assert retry["trial_id"] == first["trial_id"]
    failed = api.post(
        f"/jobs/{retry['job_id']}/fail",
        {"lease_token": retry["lease_token"], "error": "CUDA out of memory\n"},
    )
    assert failed.json()["trial_state"] == "failed"
    fine = _claim(api, eid, "w1")  # another trial, which does not fail
    assert fine["trial_number"] == 1

    answer = api.get(f"/experiments/{eid}/failures")
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["experiment_id"] == eid and out["total"] == 2
    latest, earlier = out["items"]
    assert (latest["job_id"], earlier["job_id"]) == (retry["job_id"], first["job_id"])
    assert (latest["trial_number"], latest["attempt"], latest["outcome"]) == (0, 1, "failed")
    assert (earlier["trial_number"], earlier["attempt"], earlier["worker_id"]) == (0, 0, "w1")
    # The end of the text is kept (the exception), with the agent's first line.
    assert earlier["error"].splitlines()[-1] == "ValueError: lr must be positive"
    assert earlier["error"].startswith("the command exited with code 1")
    assert latest["error"].startswith("CUDA out of memory")
    assert "no retries left" in latest["error"]
    assert latest["ended_at"] is not None

    only = api.get(f"/experiments/{eid}/failures", limit=1).json()
    assert [f["job_id"] for f in only["items"]] == [retry["job_id"]] and only["total"] == 2
    # The trial's own jobs carry the same errors (one home: shapes.job_errors); a job that
    # did not fail has none.
    jobs = {j["id"]: j for j in api.get(f"/experiments/{eid}/trials/0").json()["jobs"]}
    assert jobs[first["job_id"]]["error"] == earlier["error"]
    assert jobs[retry["job_id"]]["error"] == latest["error"]
    running = api.get(f"/experiments/{eid}/trials/1").json()["jobs"]
    assert [j["error"] for j in running] == [None]


def test_a_lost_lease_is_listed_as_lost(api: Api) -> None:
    from api.reaper import reap_once

    experiment = api.create_experiment(lease_ttl_s=1)
    job = _claim(api, experiment["id"], "gone")
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    real = runtime.clock
    runtime.clock = lambda: real() + 5
    try:
        assert [j.id for j in reap_once(runtime)] == [job["job_id"]]
    finally:
        runtime.clock = real
    items = api.get(f"/experiments/{experiment['id']}/failures").json()["items"]
    assert [(f["job_id"], f["outcome"]) for f in items] == [(job["job_id"], "lost")]
    assert "gone" in items[0]["error"] and "lease" in items[0]["error"]
    trial = api.get(f"/experiments/{experiment['id']}/trials/{job['trial_number']}").json()
    lost = next(j for j in trial["jobs"] if j["id"] == job["job_id"])
    assert lost["state"] == "expired" and lost["error"] == items[0]["error"]


def test_failures_of_an_experiment_without_any_and_of_none(api: Api) -> None:
    experiment = api.create_experiment()
    _claim(api, experiment["id"])
    out = api.get(f"/experiments/{experiment['id']}/failures").json()
    assert out == {"experiment_id": experiment["id"], "total": 0, "items": []}
    missing = api.get("/experiments/99999/failures")
    assert missing.status_code == 404 and "99999" in missing.json()["detail"]
    for limit in (0, 101):
        bad = api.get(f"/experiments/{experiment['id']}/failures", limit=limit)
        assert bad.status_code == 422 and "limit" in bad.json()["detail"]
