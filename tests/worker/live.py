"""A real tuner server for SDK, agent and CLI tests: ``tuner server`` (our own command) in a
subprocess on a free port, over a SQLite file copied from the session's migrated template.

Imported by the conftest of tests/client, tests/worker and tests/cli.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.factories import asha_document
from tests.server_process import ServerProcess
from tuner.client import Client

ADMIN_TOKEN = "tnr_test_admin"
ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SCRIPTS = Path(__file__).resolve().parent / "scripts"




def tuner_command(*args: str) -> list[str]:
    """``tuner ARGS`` run by this interpreter (whatever the PATH holds)."""
    return [PYTHON, "-m", "tuner.cli", *args]


def small_document(**overrides: Any) -> dict[str, Any]:
    """ASHA with rungs at 1, 3 and 9 over two parameters; short leases."""
    return asha_document(**{
        "name": "agent-test", "budget": {"max_trials": 6}, "seed": 3, "lease_ttl_s": 3,
        **overrides,
    })


class Server(ServerProcess):
    """One ``tuner server`` process; ``kill`` and ``start`` again on the same DB and port."""

    def __init__(self, db_path: Path, log_path: Path, **env: str) -> None:
        self.db_url = f"sqlite:///{db_path}"
        super().__init__(log_path, {
            **os.environ,
            "TUNER_ADMIN_TOKEN": ADMIN_TOKEN,
            "TUNER_REAPER_INTERVAL_S": "0.5",
            "TUNER_CLAIM_RECHECK_S": "0.2",
            "TUNER_LOG_LEVEL": "WARNING",
            **env,
        })

    def command(self) -> list[str]:
        return tuner_command("server", "--port", str(self.port), "--db", self.db_url)

    def client(self, token: str = ADMIN_TOKEN, **kwargs: Any) -> Client:
        return Client(self.url, token, **kwargs)

    def token(self, role: str) -> str:
        with self.client() as client:
            return client.create_token(role, f"test {role}").token


ServerFactory = Callable[..., Server]


@contextmanager
def _servers(template: Path, directory: Path) -> Iterator[ServerFactory]:
    """A factory of servers, each on a fresh copy of ``template``; on leaving, every server
    it made is stopped, whatever happened (a failed start stops its own)."""
    with ExitStack() as stopping:
        count = 0

        def start(**env: str) -> Server:
            nonlocal count
            db = directory / f"server{count}.db"
            shutil.copy(template, db)
            server = Server(db, directory / f"server{count}.log", **env)
            count += 1
            stopping.callback(server.stop)  # registered before it starts: nothing escapes
            return server.start()

        yield start


@pytest.fixture
def server_factory(sqlite_template: Path, tmp_path: Path) -> Iterator[ServerFactory]:
    """Start fresh servers (each on its own database); all are stopped afterwards."""
    with _servers(sqlite_template, tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server for a whole test module (tests use their own experiments)."""
    with _servers(sqlite_template, tmp_path_factory.mktemp("server")) as start:
        yield start()
