"""Plain reports (``api.writer.Writer.write_plain_report``): on PostgreSQL a report that needs
no judgement is one autocommit statement; every answer and every row must be what the full
path gives, which SQLite (no fast path) checks against the same expectations. On PostgreSQL
the tests also see which reports took the fast path, so a guard that let the wrong report
through, or a path that was never taken, fails them."""

from __future__ import annotations

from typing import Any

import pytest

from api.writer import Writer
from tests.api.conftest import Api

STOPPING = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9, "form": "stopping"}


@pytest.fixture
def plain_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(step, stored plainly) of every report that tried the fast path."""
    log: list[tuple[int, bool]] = []
    real = Writer.write_plain_report

    async def logged(writer: Writer, job_id: int, body: Any, value: float, now: float) -> bool:
        stored = await real(writer, job_id, body, value, now)
        log.append((body.step, stored))
        return stored

    monkeypatch.setattr(Writer, "write_plain_report", logged)
    return log


def _is_postgres(api: Api) -> bool:
    return bool(api.client.app.state.runtime.is_postgres)  # type: ignore[attr-defined]


def _plain_steps(api: Api, log: list[tuple[int, bool]]) -> list[int]:
    steps = [step for step, stored in log if stored]
    if not _is_postgres(api):
        assert steps == []  # SQLite: every report takes the full path
    return steps


def _report(api: Api, job: dict[str, Any], step: int, value: float, **extra: Any) -> Any:
    return api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": step, "value": value, **extra},
    )


def _trial(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/trials/{job['trial_id']}").json()
    return body


def test_a_job_between_its_rungs(api: Api, plain_log: list[tuple[int, bool]]) -> None:
    """Steps 1 and 3 reach rungs (judged), the others are plain; the rows are the same."""
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"], worker_id="w").json()
    answers = [_report(api, job, step, 1.0 / step, metrics={"acc": step}) for step in range(1, 10)]
    assert [a.status_code for a in answers] == [200] * 9
    assert {a.json()["decision"] for a in answers} == {"continue"}
    trial = _trial(api, job)
    assert [r["step"] for r in trial["reports"]] == list(range(1, 10))
    assert [r["metrics"]["acc"] for r in trial["reports"]] == list(range(1, 10))
    assert trial["last_value"] == pytest.approx(1.0 / 9)
    assert [v["rung"] for v in trial["rung_values"]] == [0, 1]  # judged at steps 1 and 3
    expected = [2, 4, 5, 6, 7, 8, 9] if _is_postgres(api) else []
    assert _plain_steps(api, plain_log) == expected
    done = api.post(f"/jobs/{job['job_id']}/complete", {"lease_token": job["lease_token"]})
    assert done.json()["decision"] == "complete"


def test_a_plain_report_renews_the_lease_and_keeps_the_checkpoint(
    api: Api, plain_log: list[tuple[int, bool]]
) -> None:
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"], worker_id="w").json()
    assert _report(api, job, 1, 0.5).status_code == 200
    before = _trial(api, job)["jobs"][0]["lease_expires_at"]
    answer = _report(api, job, 2, 0.4, checkpoint="ckpt-2")
    assert answer.json()["decision"] == "continue"
    trial = _trial(api, job)
    assert trial["checkpoint"] == "ckpt-2"
    assert trial["jobs"][0]["lease_expires_at"] >= before
    assert _plain_steps(api, plain_log) == ([2] if _is_postgres(api) else [])


def test_repeats_and_conflicts_at_a_plain_step(api: Api, plain_log: list[tuple[int, bool]]) -> None:
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"], worker_id="w").json()
    _report(api, job, 1, 0.5)
    first, again, other = (_report(api, job, 2, v) for v in (0.4, 0.4, 0.9))
    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 409)
    assert again.json()["decision"] == "continue"
    assert other.json()["error"] == "duplicate_report"
    trial = _trial(api, job)
    assert [r["value"] for r in trial["reports"]] == [0.5, 0.4]
    assert trial["last_value"] == 0.4
    # Only the first was stored plainly; the repeats wrote nothing there.
    assert _plain_steps(api, plain_log) == ([2] if _is_postgres(api) else [])


def test_stale_expired_and_out_of_range_write_nothing(
    api: Api, plain_log: list[tuple[int, bool]]
) -> None:
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"], worker_id="w").json()
    _report(api, job, 1, 0.5)
    stale = api.post(
        f"/jobs/{job['job_id']}/reports", {"lease_token": "not-the-token", "step": 2, "value": 1.0}
    )
    assert (stale.status_code, stale.json()["error"]) == (409, "lease_expired")
    beyond = _report(api, job, 10, 1.0)
    assert beyond.status_code == 422 and "1..9" in beyond.json()["detail"]
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    real = runtime.clock
    runtime.clock = lambda: real() + 3600  # the lease (60 s) has expired
    try:
        expired = _report(api, job, 2, 1.0)
    finally:
        runtime.clock = real
    assert (expired.status_code, expired.json()["error"]) == (409, "lease_expired")
    assert [r["step"] for r in _trial(api, job)["reports"]] == [1]
    assert _plain_steps(api, plain_log) == []


def test_a_step_past_an_unjudged_rung_is_judged(
    api: Api, plain_log: list[tuple[int, bool]]
) -> None:
    """Step 4 without step 3: it reaches rung 1 (resource 3), where the trial was not judged
    yet; the plain statement's rung guard refuses it and the full path judges it there."""
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"], worker_id="w").json()
    _report(api, job, 1, 0.5)
    assert _report(api, job, 4, 0.3).json()["decision"] == "continue"
    assert [v["rung"] for v in _trial(api, job)["rung_values"]] == [0, 1]
    assert (4, False) in plain_log and _plain_steps(api, plain_log) == []


@pytest.mark.parametrize("how", ["stop_by_hand", "cancel", "nan"])
def test_stops_win_over_a_plain_step(
    api: Api, plain_log: list[tuple[int, bool]], how: str
) -> None:
    experiment = api.create_experiment(scheduler=STOPPING)
    job = api.claim(experiment["id"], worker_id="w").json()
    _report(api, job, 1, 0.5)
    extra: dict[str, Any] = {}
    if how == "stop_by_hand":
        assert api.post(f"/trials/{job['trial_id']}/stop", role="admin").status_code == 200
    elif how == "cancel":
        assert api.post(f"/experiments/{experiment['id']}/cancel", role="admin").status_code == 200
    answer = api.post(
        f"/jobs/{job['job_id']}/reports",
        {"lease_token": job["lease_token"], "step": 2,
         **({"value_kind": "nan"} if how == "nan" else {"value": 0.4}), **extra},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"] == "stop"
    state = _trial(api, job)["state"]
    assert state == ("cancelled" if how == "cancel" else "stopped")
    assert _plain_steps(api, plain_log) == []


def test_the_promotion_form_reports_plainly_up_to_the_rung(
    api: Api, plain_log: list[tuple[int, bool]]
) -> None:
    """The promotion form judges at completion only: every report of a job is plain."""
    scheduler = {"type": "asha", "eta": 3, "min_resource": 3, "max_resource": 27}
    experiment = api.create_experiment(scheduler=scheduler)
    job = api.claim(experiment["id"], worker_id="w").json()
    assert (job["from_resource"], job["to_resource"]) == (0, 3)
    for step in (1, 2, 3):
        assert _report(api, job, step, 1.0 / step).json()["decision"] == "continue"
    done = api.post(f"/jobs/{job['job_id']}/complete", {"lease_token": job["lease_token"]})
    assert done.json()["decision"] == "pause"
    assert _trial(api, job)["rung_values"][0]["value"] == pytest.approx(1.0 / 3)
    assert _plain_steps(api, plain_log) == ([1, 2, 3] if _is_postgres(api) else [])


def test_the_fast_pools_url_is_the_drivers_own() -> None:
    """The pool connects without SQLAlchemy: the service's URL, without the driver name."""
    from tuner.storage.database import driver_conninfo

    assert driver_conninfo("postgresql+psycopg://u:p%40ss@db:5433/tuner?sslmode=require") == (
        "postgresql://u:p%40ss@db:5433/tuner?sslmode=require"
    )
    assert driver_conninfo("postgres://u@db/tuner") == "postgresql://u@db/tuner"
