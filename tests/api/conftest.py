"""API test resources: an in-process app and client per database, tokens of every role, and
a real uvicorn server in a subprocess (``live_server``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from tests.conftest import DB_PARAMS, _fresh_database
from tests.factories import asha_document as experiment_document
from tests.server_process import UvicornServer

ADMIN_TOKEN = "test-admin-token"
ROOT = Path(__file__).resolve().parents[2]


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
                "/api/v1/tokens",
                json={"role": role, "name": f"test {role}"},
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
class LiveServer(UvicornServer):
    """The API tests' server: their admin token, and a reaper every 0.5 s."""

    def __init__(self, db_url: str, log_path: Path, **env: str) -> None:
        super().__init__(db_url, log_path, ADMIN_TOKEN, **{"TUNER_REAPER_INTERVAL_S": "0.5", **env})


@pytest.fixture
def live_server_factory(db_url: str, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the test's database; every one is stopped afterwards, whatever the
    test did (a failed start stops its own)."""
    with ExitStack() as stopping:
        count = 0

        def start(**env: str) -> LiveServer:
            nonlocal count
            server = LiveServer(db_url, tmp_path / f"server{count}.log", **env)
            count += 1
            stopping.callback(server.stop)  # registered before it starts: nothing escapes
            return server.start()

        yield start


@pytest.fixture
def live_server(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory()
