"""Whole ASHA experiments through real uvicorn servers over HTTP, 32 concurrent workers,
through a server killed and restarted, two replicas, and connections that PostgreSQL ends."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text

from tests.api import harness
from tests.api.conftest import ADMIN_TOKEN, LiveServer, bearer, experiment_document
from tests.conftest import DB_PARAMS
from tuner.storage.database import make_engine

POSTGRES_ONLY = DB_PARAMS[1]

pytestmark = pytest.mark.slow

N_WORKERS = 32


def _setup(url: str, **overrides: object) -> tuple[int, str]:
    """Create the experiment and a worker token through the API."""
    with httpx.Client(base_url=url, headers=bearer(ADMIN_TOKEN), timeout=30) as client:
        doc = experiment_document(**{
            "name": "live", "budget": {"max_trials": 60},
            "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9},
            **overrides,
        })
        created = client.post("/api/v1/experiments", json=doc)
        assert created.status_code == 201, created.text
        token = client.post("/api/v1/tokens", json={"role": "worker", "name": "workers"})
        assert token.status_code == 201, token.text
        return created.json()["id"], token.json()["token"]


def _run_to_the_end(
    url: str, db_url: str, **overrides: object
) -> tuple[harness.Log, dict[str, int]]:
    """32 workers run the experiment to its end; the checks every such run must pass."""
    experiment_id, token = _setup(url, **overrides)
    log, workers = harness.run_workers([url], token, experiment_id, N_WORKERS, timeout_s=90)
    harness.join(workers, 100)
    assert not log.errors, log.errors[:5]
    assert all(not w.is_alive() for w in workers), "workers still running: experiment stuck"
    harness.check_no_job_twice(log)
    summary = harness.check_database(db_url, experiment_id, log, eta=3)
    assert 500 not in log.statuses
    return log, summary


def test_live_32_workers_run_asha_to_the_end(live_server: LiveServer, db_url: str) -> None:
    _, summary = _run_to_the_end(live_server.url, db_url)
    assert summary["reports"] >= 60 and summary["promotions"] >= 20


def test_live_32_workers_stopping_form(live_server: LiveServer, db_url: str) -> None:
    """The stopping form under 32 workers: half of them get their next job with the answer
    that stopped (or completed) the last one; every judgement follows the rule."""
    log, summary = _run_to_the_end(live_server.url, db_url, scheduler={
        "type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9, "form": "stopping",
    })
    assert summary["judged"] >= 60 and summary["stopped"] >= 20
    assert len(log.leases) == 60  # one job per trial: stopped trials are not resumed


def test_live_sigkill_and_restart_loses_nothing(
    live_server_factory: Callable[..., LiveServer], db_url: str
) -> None:
    server = live_server_factory()
    experiment_id, token = _setup(server.url, lease_ttl_s=4)
    log, workers = harness.run_workers([server.url], token, experiment_id, N_WORKERS, 120)
    deadline = time.monotonic() + 30
    while len(log.acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    killed_at = len(log.acknowledged)
    time.sleep(0.5)
    server.start()  # same port and database: the workers keep retrying the same URL
    harness.join(workers, 130)
    assert killed_at >= 60
    assert not log.errors, log.errors[:5]
    assert all(not w.is_alive() for w in workers), "workers still running: experiment stuck"
    job_ids = [lease.job_id for lease in log.leases]
    assert len(job_ids) == len(set(job_ids)), "a job was handed out twice"
    harness.check_database(db_url, experiment_id, log, eta=3)


@pytest.mark.parametrize("db_url", [POSTGRES_ONLY], indirect=True)  # SQLite: one process
def test_live_two_replicas_share_workers(
    live_server_factory: Callable[..., LiveServer], db_url: str
) -> None:
    first, second = live_server_factory(), live_server_factory()
    experiment_id, token = _setup(first.url)
    log, workers = harness.run_workers(
        [first.url, second.url], token, experiment_id, N_WORKERS, timeout_s=90
    )
    harness.join(workers, 100)
    assert not log.errors, log.errors[:5]
    assert all(not w.is_alive() for w in workers)
    harness.check_no_job_twice(log)
    harness.check_database(db_url, experiment_id, log, eta=3)


def _cut_connections(db_url: str) -> int:
    """End every other session on the server's database, as a PostgreSQL restart does to
    them (``pg_terminate_backend``: each gets "terminating connection due to administrator
    command"); how many were ended."""
    engine = make_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            ended = conn.execute(text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalar_one()
    finally:
        engine.dispose()
    return int(ended)


@pytest.mark.parametrize("db_url", [POSTGRES_ONLY], indirect=True)
def test_live_postgres_connections_cut_mid_run_lose_nothing(
    live_server: LiveServer, db_url: str
) -> None:
    """Every connection of the service dies twice mid-run (what a PostgreSQL restart does to
    them): requests on a dead connection run again on a new one, so no worker sees an
    error, the experiment ends, and nothing acknowledged is lost or repeated."""
    experiment_id, token = _setup(live_server.url)
    log, workers = harness.run_workers([live_server.url], token, experiment_id, N_WORKERS, 90)
    cuts = []
    for at in (40, 100):
        deadline = time.monotonic() + 30
        while len(log.acknowledged) < at and time.monotonic() < deadline:
            time.sleep(0.01)
        cuts.append(_cut_connections(db_url))
    harness.join(workers, 100)
    assert all(n > 0 for n in cuts), cuts  # the service's pools had connections to end
    assert len(log.acknowledged) >= 100
    assert not log.errors, log.errors[:5]
    assert all(not w.is_alive() for w in workers), "workers still running: experiment stuck"
    harness.check_no_job_twice(log)
    harness.check_database(db_url, experiment_id, log, eta=3)
    metrics = httpx.get(f"{live_server.url}/metrics", timeout=10).text
    retried = [
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith("tuner_db_retries_total{")
    ]
    assert sum(retried) >= 1, "the lost connections were not counted as retries"
