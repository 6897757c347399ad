"""The best trial through the API (contract A): trials ranked as the scheduler ranks them,
with the step and the checkpoint that the ranked value belongs to, on SQLite and
PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

from tests.api.conftest import Api


def _value(number: int, step: int) -> float:
    """Accuracy-like (maximised): trial 0 peaks at step 1 and then falls, the others rise."""
    if number == 0:
        return 0.99 if step == 1 else 0.5
    return 0.6 + 0.01 * number + 0.02 * step


def _run(api: Api, experiment_id: int) -> None:
    """Claim and train every job (a checkpoint with each completion) until the end."""
    for _ in range(100):
        answer = api.claim(experiment_id, worker_id="w1")
        if answer.status_code == 410:
            return
        assert answer.status_code == 200, answer.text
        job = answer.json()
        number, token = job["trial_number"], job["lease_token"]
        for step in range(job["from_resource"] + 1, job["to_resource"] + 1):
            body = {"lease_token": token, "step": step, "value": _value(number, step)}
            assert api.post(f"/jobs/{job['job_id']}/reports", body).status_code == 200
        done = {"lease_token": token, "checkpoint": f"ckpt/{number}/{job['to_resource']}"}
        answer = api.post(f"/jobs/{job['job_id']}/complete", done)
        assert answer.status_code == 200, answer.text
    raise AssertionError("the experiment never ended")


def _rank(trial: dict[str, Any]) -> tuple[Any, ...]:
    """Contract A written out over the API's fields, for a maximised metric."""
    if trial["ranked_step"] is None:
        return (2, 0, 0.0, trial["number"])
    if trial["ranked_value"] is None:
        return (1, -trial["ranked_step"], 0.0, trial["number"])
    return (0, -trial["ranked_step"], -trial["ranked_value"], trial["number"])


def test_ranking_best_trial_is_the_one_at_the_highest_rung(api: Api) -> None:
    experiment = api.create_experiment(mode="max", metric="accuracy")
    _run(api, experiment["id"])
    items = api.get(f"/experiments/{experiment['id']}/trials", order_by="value").json()["items"]
    assert len(items) == 12
    assert [t["number"] for t in items] == [t["number"] for t in sorted(items, key=_rank)]
    for trial in items:  # each ranked value is the trial's report at its ranked step
        reports = api.get(f"/trials/{trial['id']}").json()["reports"]
        at = {r["step"]: r["value"] for r in reports}
        assert trial["ranked_step"] is not None and trial["checkpoint"] is not None
        assert math.isclose(trial["ranked_value"], at[trial["ranked_step"]])
        assert trial["checkpoint"] == f"ckpt/{trial['number']}/{trial['checkpoint_step']}"
        assert trial["best_value"] == max(at.values())
    peaked = next(t for t in items if t["number"] == 0)
    assert peaked["best_value"] == 0.99 and peaked["ranked_value"] == 0.5  # best seen != ranked
    top = items[0]
    assert top["ranked_step"] == 9 and top["number"] != 0
    best = api.get(f"/experiments/{experiment['id']}").json()["progress"]["best"]
    assert best == {
        "trial_id": top["id"], "trial_number": top["number"], "value": top["ranked_value"],
        "step": 9, "checkpoint": top["checkpoint"], "checkpoint_step": top["checkpoint_step"],
    }


def test_ranking_without_results_and_with_a_non_finite_value(api: Api) -> None:
    experiment = api.create_experiment()
    first = api.claim(experiment["id"], worker_id="w1").json()
    second = api.claim(experiment["id"], worker_id="w1").json()
    body = {"lease_token": first["lease_token"], "step": 1, "value_kind": "nan"}
    answer = api.post(f"/jobs/{first['job_id']}/reports", body)  # a diverged run: stopped
    assert answer.status_code == 200 and answer.json()["decision"] == "stop", answer.text
    items = api.get(f"/experiments/{experiment['id']}/trials", order_by="value").json()["items"]
    by_number = {t["number"]: t for t in items}
    diverged, untrained = by_number[first["trial_number"]], by_number[second["trial_number"]]
    assert (diverged["ranked_step"], diverged["ranked_value"]) == (1, None)
    assert (untrained["ranked_step"], untrained["ranked_value"]) == (None, None)
    assert untrained["checkpoint_step"] is None
    assert [t["number"] for t in items] == [first["trial_number"], second["trial_number"]]
    assert api.get(f"/experiments/{experiment['id']}").json()["progress"]["best"] is None


def test_ranking_in_the_stopping_form(api: Api) -> None:
    """The stopping form judges a trial at each rung its reports reach (PostgreSQL sends
    that rung insert with the report's next statement): every trial is ranked at the
    highest of them, by its report there."""
    scheduler = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9,
                 "form": "stopping"}
    experiment = api.create_experiment(scheduler=scheduler)
    for _ in range(100):
        answer = api.claim(experiment["id"], worker_id="w1")
        if answer.status_code == 410:
            break
        assert answer.status_code == 200, answer.text
        job = answer.json()
        for step in range(job["from_resource"] + 1, job["to_resource"] + 1):
            value = 0.1 * job["trial_number"] + 1.0 / step  # lower is better: later trials stop
            body = {"lease_token": job["lease_token"], "step": step, "value": value}
            answer = api.post(f"/jobs/{job['job_id']}/reports", body)
            assert answer.status_code == 200, answer.text
            if answer.json()["decision"] == "stop":
                break
        else:
            done = {"lease_token": job["lease_token"]}
            assert api.post(f"/jobs/{job['job_id']}/complete", done).status_code == 200
    else:
        raise AssertionError("the experiment never ended")
    items = api.get(f"/experiments/{experiment['id']}/trials", order_by="value").json()["items"]
    assert len(items) == 12 and {t["ranked_step"] for t in items} >= {1, 9}
    for trial in items:
        assert trial["ranked_step"] == (1, 3, 9)[trial["rung"]]
        reports = api.get(f"/trials/{trial['id']}").json()["reports"]
        at = {r["step"]: r["value"] for r in reports}
        assert math.isclose(trial["ranked_value"], at[trial["ranked_step"]])
    assert [t["number"] for t in items] == [
        t["number"] for t in sorted(
            items, key=lambda t: (-t["ranked_step"], t["ranked_value"], t["number"])
        )
    ]
