"""A tuner server in a subprocess on a free port, for tests that need real HTTP, real
restarts and real SIGKILLs. Subclasses say which command starts it.

``start`` waits for ``/healthz`` as long as the process is alive and making progress (it
uses CPU time or writes to its log), up to a ceiling that grows with the machine's load
(``TUNER_TEST_START_TIMEOUT_S`` sets it). Whatever ends the wait without an answer (an
exit, a stall, the ceiling, an exception, Ctrl-C), the process is stopped before ``start``
raises: a failed start never leaves a server behind.
"""

from __future__ import annotations

import abc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

ROOT = Path(__file__).resolve().parents[1]

#: Overrides the start ceiling, in seconds (default: :data:`BASE_CEILING_S` times the load).
START_TIMEOUT_ENV = "TUNER_TEST_START_TIMEOUT_S"
#: The ceiling on an idle machine, and the most it grows to (pytest-timeout ends a test at 300).
BASE_CEILING_S, MAX_DEFAULT_CEILING_S = 90.0, 240.0
#: How long a starting server may show no progress at all on an idle machine.
BASE_STALL_S = 20.0
POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load_average() -> float | None:
    """The load average over the last minute; None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_factor() -> float:
    """Runnable processes per CPU over the last minute, at least 1 (an idle machine)."""
    load = load_average()
    return 1.0 if load is None else max(1.0, load / (os.cpu_count() or 1))


def start_ceiling_s() -> float:
    """The longest ``start`` waits: ``TUNER_TEST_START_TIMEOUT_S``, else scaled by load."""
    configured = os.environ.get(START_TIMEOUT_ENV)
    if configured:
        return float(configured)
    return min(MAX_DEFAULT_CEILING_S, BASE_CEILING_S * load_factor())


def cpu_ticks(pid: int) -> int | None:
    """CPU time used by ``pid`` (and its reaped children), in clock ticks; None where
    ``/proc`` cannot tell (not Linux, or the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces, in parentheses): state is
    # field 3, utime/stime/cutime/cstime are fields 14-17.
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])


class ServerStartError(RuntimeError):
    """The server did not answer ``/healthz``; it has been stopped."""


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

    def is_ready(self, http: httpx.Client) -> bool:
        """Whether the server answers ``/healthz`` with 200 now."""
        try:
            return http.get(f"{self.url}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, stall_s: float | None = None, *, ceiling_s: float | None = None) -> Self:
        """Start the server and wait until it is ready.

        Args:
            stall_s: give up when the process shows no progress (no CPU time, no log
                output) for this long; default :data:`BASE_STALL_S` times the load.
            ceiling_s: give up after this long in any case; default :func:`start_ceiling_s`.

        Raises:
            ServerStartError: it exited, stalled or hit the ceiling; the process is stopped.
            BaseException: whatever interrupted the wait, after stopping the process.
        """
        ceiling_s = start_ceiling_s() if ceiling_s is None else ceiling_s
        if stall_s is None:
            stall_s = min(ceiling_s, BASE_STALL_S * load_factor())
        with self.log_path.open("ab") as log:  # the child holds its own copy of the handle
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_ready(self.process, stall_s, ceiling_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _progress(self, pid: int) -> tuple[int | None, int]:
        try:
            size = self.log_path.stat().st_size
        except OSError:
            size = -1
        return cpu_ticks(pid), size

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], stall_s: float, ceiling_s: float
    ) -> None:
        started = progressed = time.monotonic()
        seen = self._progress(process.pid)
        with httpx.Client(timeout=1.0) as http:
            while True:
                code = process.poll()
                if code is not None:
                    raise self._error(f"it exited with code {code}", "its log says why")
                if self.is_ready(http):
                    return
                now = time.monotonic()
                progress = self._progress(process.pid)
                # Without a CPU count (no /proc) being alive is all the progress we can see.
                if progress != seen or progress[0] is None:
                    seen, progressed = progress, now
                if now - progressed > stall_s:
                    raise self._error(
                        f"it used no CPU time and wrote nothing for {stall_s:.0f} s",
                        "it is waiting on something (a database, a port, a lock): see its log",
                    )
                if now - started > ceiling_s:
                    raise self._error(
                        f"it was still starting after {ceiling_s:.0f} s",
                        f"if the machine is just busy, set {START_TIMEOUT_ENV} to more "
                        "seconds (and pytest's --timeout above it) or run fewer tests at once",
                    )
                time.sleep(POLL_S)

    def _error(self, what: str, todo: str) -> ServerStartError:
        try:
            tail = self.log_path.read_text(errors="replace")[-3000:]
        except OSError as exc:
            tail = f"(no log: {exc})"
        load = load_average()
        busy = f"load average {load:.1f}" if load is not None else "load unknown"
        return ServerStartError(
            f"server {' '.join(self.command())} did not answer {self.url}/healthz: {what} "
            f"({busy} on {os.cpu_count()} CPUs); it was stopped. "
            f"What to do: {todo}. Its log {self.log_path} ends:\n{tail}"
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; whatever was committed is all there is."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL when it has not ended 10 s later."""
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
