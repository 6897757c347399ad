"""API test resources: an in-process app and client per database, tokens of every role, and
a real uvicorn server in a subprocess (``live_server``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from tests.conftest import DB_PARAMS, _fresh_database

ADMIN_TOKEN = "test-admin-token"
ROOT = Path(__file__).resolve().parents[2]


def experiment_document(**overrides: Any) -> dict[str, Any]:
    """A small ASHA experiment (r=1, R=9, eta=3) over two parameters."""
    doc: dict[str, Any] = {
        "name": "test",
        "metric": "loss",
        "mode": "min",
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "width": {"type": "int", "low": 1, "high": 512},
        },
        "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9},
        "budget": {"max_trials": 12},
        "seed": 1,
        "lease_ttl_s": 60,
    }
    doc.update(overrides)
    return doc


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url, admin_token=ADMIN_TOKEN, reaper_interval_s=0, claim_recheck_s=0.05
    )


@dataclass
class Api:
    """A TestClient plus one token per role."""

    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def as_(self, role: str) -> dict[str, str]:
        return bearer(self.tokens[role])

    def create_experiment(self, **overrides: Any) -> dict[str, Any]:
        answer = self.client.post(
            "/api/v1/experiments", json=experiment_document(**overrides), headers=self.as_("admin")
        )
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def claim(self, experiment_id: int, **body: Any) -> httpx.Response:
        return self.client.post(
            f"/api/v1/experiments/{experiment_id}/claims", json=body, headers=self.as_("worker")
        )

    def post(self, path: str, body: Any = None, role: str = "worker") -> httpx.Response:
        return self.client.post(f"/api/v1{path}", json=body, headers=self.as_(role))

    def get(self, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
        return self.client.get(f"/api/v1{path}", params=params, headers=self.as_(role))


def _open_api(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(settings)) as client:
        tokens = {"admin": ADMIN_TOKEN}
        for role in ("worker", "viewer"):
            answer = client.post(
                "/api/v1/tokens", json={"role": role, "name": f"test {role}"},
                headers=bearer(ADMIN_TOKEN),
            )
            assert answer.status_code == 201, answer.text
            tokens[role] = answer.json()["token"]
        yield Api(client, tokens)


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    """A fresh app over a fresh database."""
    yield from _open_api(settings)


@pytest.fixture(scope="module", params=DB_PARAMS)
def shared_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One app and database per module and database kind, for tables of cases that each
    make their own rows (bad input, roles): a fresh database per case costs ~1 s on
    PostgreSQL."""
    databases = _fresh_database(request.param, request, tmp_path_factory.mktemp("shared"))
    url = next(databases)
    try:
        yield from _open_api(
            Settings(database_url=url, admin_token=ADMIN_TOKEN, reaper_interval_s=0)
        )
    finally:
        for _ in databases:  # the database's teardown
            pass


# ---- a real server -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """``uvicorn api.main:create_app --factory`` in a subprocess on a free port."""

    def __init__(self, db_url: str, log_path: Path, **env: str) -> None:
        self.db_url, self.log_path, self.extra_env = db_url, log_path, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> LiveServer:
        env = {
            **os.environ, "TUNER_DATABASE_URL": self.db_url, "TUNER_ADMIN_TOKEN": ADMIN_TOKEN,
            "TUNER_REAPER_INTERVAL_S": "0.5", "TUNER_LOG_LEVEL": "WARNING", **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; whatever was committed is all there is."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def live_server_factory(
    db_url: str, tmp_path: Path
) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(**env: str) -> LiveServer:
        server = LiveServer(db_url, tmp_path / f"server{len(servers)}.log", **env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory()
