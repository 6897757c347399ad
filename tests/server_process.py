"""A tuner server in a subprocess on a free port, for tests that need real HTTP, real
restarts and real SIGKILLs. Subclasses say which command starts it."""

from __future__ import annotations

import abc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess(abc.ABC):
    """``start`` (waits for ``/healthz``), ``kill`` (SIGKILL) and ``stop``; a killed server
    can be started again on the same port and database."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.log_path, self.env = log_path, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the server on ``self.port``."""

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
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


class UvicornServer(ServerProcess):
    """``uvicorn api.main:create_app --factory`` on a database URL, with an admin token."""

    def __init__(self, db_url: str, log_path: Path, admin_token: str, **env: str) -> None:
        self.db_url = db_url
        super().__init__(
            log_path,
            {
                **os.environ,
                "TUNER_DATABASE_URL": db_url,
                "TUNER_ADMIN_TOKEN": admin_token,
                "TUNER_LOG_LEVEL": "WARNING",
                **env,
            },
        )

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "api.main:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
