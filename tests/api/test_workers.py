"""Workers over the API: busy, idle and offline (the heartbeat window), the agent's GPU
readings and job count, and the dashboard's read of the same rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from api.dashboard import data
from tests.api.conftest import Api
from tuner.wire import WORKER_OFFLINE_AFTER_S

#: ``nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total
#: --format=csv,noheader,nounits`` as the agent parses it (tests/worker/test_gpus.py).
STATS = [
    {"index": 0, "name": "NVIDIA H100 80GB HBM3", "utilization": 97.0,
     "memory_used_mb": 70123.0, "memory_total_mb": 81559.0},
    {"index": 1, "name": "NVIDIA H100 80GB HBM3", "utilization": None,
     "memory_used_mb": 4.0, "memory_total_mb": 81559.0},
]


def _later(api: Api, seconds: float) -> Callable[[], None]:
    """Move the server's clock ``seconds`` ahead; the answer puts it back."""
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    real = runtime.clock
    runtime.clock = lambda: real() + seconds

    def back() -> None:
        runtime.clock = real

    return back


def _worker(api: Api, worker_id: str) -> dict[str, Any]:
    answer = api.get("/workers")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = [w for w in answer.json()["items"] if w["worker_id"] == worker_id]
    assert len(found) == 1, answer.json()
    return found[0]


def _register(api: Api, worker_id: str, **fields: Any) -> dict[str, Any]:
    answer = api.post("/workers", {"worker_id": worker_id, "host": "box", **fields})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_worker_is_idle_then_busy_then_offline_after_the_window(api: Api) -> None:
    registered = _register(api, "w1")
    assert registered["state"] == "idle" and registered["gpu_stats"] is None
    assert registered["jobs_done"] == 0
    experiment = api.create_experiment(lease_ttl_s=600)
    job = api.claim(experiment["id"], worker_id="w1").json()
    assert _worker(api, "w1")["state"] == "busy"
    back = _later(api, WORKER_OFFLINE_AFTER_S - 10)
    try:  # a heartbeat inside the window keeps a busy worker seen
        beat = api.post(f"/jobs/{job['job_id']}/heartbeat", {"lease_token": job["lease_token"]})
        assert beat.status_code == 200, beat.text
    finally:
        back()
    back = _later(api, WORKER_OFFLINE_AFTER_S + 30)
    try:  # 40 s after that heartbeat: still inside the window
        assert _worker(api, "w1")["state"] == "busy"
    finally:
        back()
    back = _later(api, 2 * WORKER_OFFLINE_AFTER_S)
    try:  # nothing heard for longer than the window: offline, though it holds a lease
        worker = _worker(api, "w1")
        assert worker["state"] == "offline" and worker["current_jobs"] == [job["job_id"]]
    finally:
        back()


def test_an_idle_worker_that_registers_again_stays_online(api: Api) -> None:
    _register(api, "w2")
    back = _later(api, WORKER_OFFLINE_AFTER_S + 1)
    try:
        assert _worker(api, "w2")["state"] == "offline"
        _register(api, "w2")  # the agent's report every 30 s
        assert _worker(api, "w2")["state"] == "idle"
    finally:
        back()


def test_an_exiting_worker_is_offline_at_once_until_it_registers_again(api: Api) -> None:
    _register(api, "w3", jobs_done=4)
    left = _register(api, "w3", exiting=True)
    assert left["state"] == "offline" and left["jobs_done"] == 4  # null keeps the count
    assert _worker(api, "w3")["state"] == "offline"
    assert _register(api, "w3", jobs_done=0)["state"] == "idle"  # started again


def test_gpu_readings_and_jobs_done_are_kept_apart_from_the_labels(api: Api) -> None:
    first = _register(
        api, "gpu-box", gpus=["0: NVIDIA H100 80GB HBM3, 81559 MiB"], gpu_stats=STATS,
        jobs_done=7, labels={"zone": "a"},
    )
    assert first["gpu_stats"] == STATS and first["jobs_done"] == 7
    worker = _worker(api, "gpu-box")
    assert worker["gpu_stats"] == STATS and worker["jobs_done"] == 7
    assert worker["labels"] == {"zone": "a"} and worker["gpus"] == [
        "0: NVIDIA H100 80GB HBM3, 81559 MiB"
    ]
    unknown = _register(api, "gpu-box", labels={"zone": "a"})  # no nvidia-smi any more
    assert unknown["gpu_stats"] is None and unknown["jobs_done"] == 7


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"labels": {"tuner.agent": "x"}}, "labels.tuner.agent"),
        ({"gpu_stats": [{"index": 0, "utilization": 140.0}]}, "gpu_stats"),
        ({"gpu_stats": [{"index": -1}]}, "gpu_stats"),
        ({"gpu_stats": [{"index": 0, "fan": 3}]}, "gpu_stats"),
        ({"jobs_done": -1}, "jobs_done"),
        ({"exiting": "yes"}, "exiting"),
    ],
    ids=["reserved-label", "utilization-over-100", "negative-index", "unknown-field",
         "negative-jobs", "exiting-not-bool"],
)
def test_bad_worker_registration_is_a_422_naming_the_field(
    api: Api, fields: dict[str, Any], where: str
) -> None:
    answer = api.post("/workers", {"worker_id": "bad", "host": "box", **fields})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "invalid_request" and where in body["detail"], body


@pytest.mark.parametrize("field", ["memory_used_mb", "memory_total_mb", "utilization"])
def test_a_non_finite_gpu_reading_is_a_422_on_every_database(api: Api, field: str) -> None:
    """JSON's Infinity (Python writes it) would be stored as null on SQLite and refused by
    PostgreSQL as a value it cannot store: the request model refuses it on both."""
    stat = f'{{"index": 0, "{field}": Infinity}}'
    body = f'{{"worker_id": "inf", "host": "box", "gpu_stats": [{stat}]}}'
    answer = api.client.post(
        "/api/v1/workers", content=body,
        headers={**api.as_("worker"), "Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert "gpu_stats" in answer.json()["detail"] and field in answer.json()["detail"]


def test_dashboard_workers_read_has_the_same_state_and_readings(api: Api) -> None:
    _register(api, "dash-busy", gpu_stats=STATS, jobs_done=3, labels={"zone": "b"})
    _register(api, "dash-gone")
    _register(api, "dash-gone", exiting=True)
    experiment = api.create_experiment(lease_ttl_s=600)
    job = api.claim(experiment["id"], worker_id="dash-busy").json()
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    page = runtime.read("test", lambda s: data.workers(s, runtime.now()))
    rows = {w["worker_id"]: w for w in page["items"]}
    busy = rows["dash-busy"]
    assert busy["state"] == "busy" and busy["gpu_stats"] == STATS and busy["jobs_done"] == 3
    assert busy["labels"] == {"zone": "b"}
    assert [j["job_id"] for j in busy["current_jobs"]] == [job["job_id"]]
    assert rows["dash-gone"]["state"] == "offline" and rows["dash-gone"]["gpu_stats"] is None
    for worker_id, row in rows.items():
        api_row = _worker(api, worker_id)
        assert (row["state"], row["jobs_done"], row["gpu_stats"]) == (
            api_row["state"], api_row["jobs_done"], api_row["gpu_stats"]
        )
