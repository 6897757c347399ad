"""A report or completion may name its metric; the wrong one is refused (422
``metric_mismatch``) before anything is written. Through the app on SQLite and PostgreSQL
(where a job claimed in the same process takes the fast path for plain reports)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api


@pytest.fixture
def api(shared_api: Api) -> Api:
    return shared_api


def _job(api: Api, **document: Any) -> dict[str, Any]:
    experiment = api.create_experiment(**document)
    answer = api.claim(experiment["id"], worker_id="w")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def _mismatch(answer: Any, named: str) -> None:
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "metric_mismatch", body
    assert body["detail"] == (
        f"this experiment optimises val_loss (min), but the "
        f"{'completion' if 'complete' in str(answer.url) else 'report'} is for {named}: "
        f"report val_loss, or submit a document whose metric is {named}"
    )


def test_a_job_says_what_its_experiment_optimises(api: Api) -> None:
    assert (_job(api)["metric"], _job(api)["mode"]) == ("loss", "min")
    job = _job(api, metric="accuracy", mode="max")
    assert (job["metric"], job["mode"]) == ("accuracy", "max")


def test_a_report_of_another_metric_is_refused_and_nothing_is_written(api: Api) -> None:
    job = _job(api, metric="val_loss", mode="min")
    for step in (1, 1):  # the first report of a job, and the same again
        answer = api.post(
            f"/jobs/{job['job_id']}/reports",
            {"lease_token": job["lease_token"], "step": step, "value": 0.9, "metric": "accuracy"},
        )
        _mismatch(answer, "accuracy")
    trial = api.get(f"/trials/{job['trial_id']}").json()
    assert trial["reports"] == [] and trial["last_value"] is None


def test_a_report_naming_its_experiments_metric_is_taken(api: Api) -> None:
    job = _job(api, metric="val_loss", mode="min")
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": 1, "value": 0.5, "metric": "val_loss"},
    )
    assert answer.status_code == 200 and answer.json()["decision"] == "continue", answer.text
    done = api.post(
        f"/jobs/{job['job_id']}/complete",
        {"lease_token": job["lease_token"], "metric": "val_loss"},
    )
    assert done.status_code == 200 and done.json()["decision"] == "pause", done.text
    reports = api.get(f"/trials/{job['trial_id']}").json()["reports"]
    assert [(r["step"], r["value"]) for r in reports] == [(1, 0.5)]


def test_a_long_jobs_later_reports_are_checked_too(api: Api) -> None:
    """A job of several steps, after a report that did not name its metric: a later report
    naming the wrong one is refused (on PostgreSQL, on the fast path for plain reports)."""
    job = _job(api, metric="val_loss", scheduler={
        "type": "asha", "eta": 3, "min_resource": 4, "max_resource": 12,
    })
    assert job["to_resource"] == 4
    url = f"/jobs/{job['job_id']}/reports"
    first = api.post(url, {"lease_token": job["lease_token"], "step": 1, "value": 0.5})
    assert first.status_code == 200, first.text
    _mismatch(
        api.post(url, {"lease_token": job["lease_token"], "step": 2, "value": 0.4,
                       "metric": "acc"}),
        "acc",
    )
    ok = api.post(
        url, {"lease_token": job["lease_token"], "step": 2, "value": 0.4, "metric": "val_loss"}
    )
    assert ok.status_code == 200, ok.text
    steps = [r["step"] for r in api.get(f"/trials/{job['trial_id']}").json()["reports"]]
    assert steps == [1, 2]


def test_a_completion_of_another_metric_is_refused(api: Api) -> None:
    job = _job(api, metric="val_loss", mode="min")
    answer = api.post(
        f"/jobs/{job['job_id']}/complete",
        {"lease_token": job["lease_token"], "value": 0.93, "metric": "accuracy"},
    )
    _mismatch(answer, "accuracy")
    trial = api.get(f"/trials/{job['trial_id']}").json()
    assert trial["state"] == "running" and trial["reports"] == []


@pytest.mark.parametrize(
    ("metric", "words"),
    [("", ["body.metric"]), ("x" * 101, ["body.metric"]), (3, ["body.metric"])],
    ids=["empty", "too-long", "not-text"],
)
def test_a_malformed_metric_name_is_invalid(api: Api, metric: Any, words: list[str]) -> None:
    job = _job(api)
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": 1, "value": 0.5, "metric": metric},
    )
    assert answer.status_code == 422 and answer.json()["error"] == "invalid_request"
    assert all(word in answer.json()["detail"] for word in words), answer.text
