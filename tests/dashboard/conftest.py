"""A live server for the dashboard tests: uvicorn in a subprocess on a free port, over a
temporary SQLite database, with ``TUNER_ADMIN_TOKEN`` set and real data driven through the
HTTP API (an ASHA run with promotions, a stopping-form run with stops, a held lease)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dashboard import driver

ROOT = Path(__file__).resolve().parents[2]
XSS_NAME = "<img src=x onerror=alert(1)>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("dashboard") / "tuner.db"
    port = free_port()
    env = {**os.environ, "TUNER_DATABASE_URL": f"sqlite:///{db}",
           "TUNER_ADMIN_TOKEN": driver.ADMIN, "TUNER_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.dashboard.app:create", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the dashboard test server did not start")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
        live_server, driver.asha_document("asha-demo", max_trials=40))
    driver.run_workers(live_server, running, n_workers=3, jobs_each=12)
    finished = driver.create_experiment(
        live_server, driver.asha_document(XSS_NAME, form="stopping", max_trials=15))
    driver.run_workers(live_server, finished, n_workers=3)
    held = driver.hold_one_job(live_server, running)
    with driver.client(live_server) as c:
        r = c.post("/api/v1/tokens", json={"role": "viewer", "name": "dashboard viewer"})
        r.raise_for_status()
        viewer = r.json()["token"]
    return Seeded(live_server, running, finished, held["trial_id"], held, viewer)
