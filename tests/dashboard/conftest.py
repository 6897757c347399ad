"""A live server for the dashboard tests: uvicorn in a subprocess on a free port, over a
temporary SQLite database, with ``TUNER_ADMIN_TOKEN`` set and real data driven through the
HTTP API (an ASHA run with promotions, a stopping-form run with stops, a held lease)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard import driver
from tests.server_process import UvicornServer

ROOT = Path(__file__).resolve().parents[2]
XSS_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("dashboard")
    server = UvicornServer(f"sqlite:///{folder / 'tuner.db'}", folder / "server.log", driver.ADMIN)
    try:
        yield server.start().url  # a failed start stops its own process
    finally:
        server.stop()


@dataclass(frozen=True)
class Seeded:
    base: str
    running: int  # an ASHA run left running: paused trials waiting at rungs, one held lease
    finished: int  # a stopping-form run, named XSS_NAME, run to completion (stops)
    held_trial: int
    held_job: dict[str, Any]  # the leased job of held_trial, with its lease token
    viewer_token: str


@pytest.fixture(scope="session")
def seeded(live_server: str) -> Seeded:
    running = driver.create_experiment(
        live_server, driver.asha_document("asha-demo", max_trials=40)
    )
    driver.run_workers(live_server, running, n_workers=3, jobs_each=12)
    finished = driver.create_experiment(
        live_server, driver.asha_document(XSS_NAME, form="stopping", max_trials=15)
    )
    driver.run_workers(live_server, finished, n_workers=3)
    held = driver.hold_one_job(live_server, running)
    with driver.client(live_server) as c:
        r = c.post("/api/v1/tokens", json={"role": "viewer", "name": "dashboard viewer"})
        r.raise_for_status()
        viewer = r.json()["token"]
    return Seeded(live_server, running, finished, held["trial_id"], held, viewer)
