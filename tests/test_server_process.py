"""The test-server harness: a failed start leaves no process behind, and a slow start that
keeps making progress is waited for (tests/server_process.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from tests import server_process
from tests.server_process import ServerProcess, ServerStartError, start_ceiling_s

#: Busy for argv[2] seconds (progress, no answer), then answer /healthz on port argv[1].
LATE_SERVER = """
import http.server, sys, time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""
IDLE_FOREVER = "import time; time.sleep(600)"
BUSY_FOREVER = "while True: pass"
EXITS = "import sys; print('cannot start: no database'); sys.exit(3)"


class ScriptServer(ServerProcess):
    """A "server" that is a Python script run with its port (and ``args``) as arguments."""

    def __init__(self, tmp_path: Path, script: str, *args: str) -> None:
        super().__init__(tmp_path / "server.log", dict(os.environ))
        self.script, self.args = script, args

    def command(self) -> list[str]:
        return [sys.executable, "-c", self.script, str(self.port), *self.args]


def _assert_gone(server: ServerProcess) -> None:
    assert server.process is not None
    assert server.process.poll() is not None, "the server is still running"
    with pytest.raises(ProcessLookupError):
        os.kill(server.process.pid, 0)


def _open_handles(path: Path) -> list[str]:
    """This process's file descriptors open on ``path`` (Linux)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd on this platform")
    found = []
    for fd in fds.iterdir():
        try:
            if Path(os.readlink(fd)) == path:
                found.append(fd.name)
        except OSError:  # closed while listing (the listing's own descriptor)
            continue
    return found


def test_server_process_stopped_when_it_never_answers_and_stalls(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path, IDLE_FOREVER)
    with pytest.raises(ServerStartError) as info:
        server.start(1.0)
    _assert_gone(server)
    message = str(info.value)
    assert "no CPU time" in message and "it was stopped" in message and "What to do" in message


def test_server_process_stopped_at_the_ceiling_while_busy(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path, BUSY_FOREVER)
    with pytest.raises(ServerStartError) as info:
        server.start(1.0, ceiling_s=2.0)
    _assert_gone(server)
    assert server_process.START_TIMEOUT_ENV in str(info.value)


def test_server_process_that_exits_is_reported_and_its_log_closed(tmp_path: Path) -> None:
    server = ScriptServer(tmp_path, EXITS)
    with pytest.raises(ServerStartError) as info:
        server.start()
    _assert_gone(server)
    assert "code 3" in str(info.value) and "cannot start: no database" in str(info.value)
    assert _open_handles(server.log_path) == []


class InterruptedServer(ScriptServer):
    def is_ready(self, http: httpx.Client) -> bool:
        raise KeyboardInterrupt


def test_server_process_stopped_when_the_wait_is_interrupted(tmp_path: Path) -> None:
    server = InterruptedServer(tmp_path, IDLE_FOREVER)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    _assert_gone(server)


def test_server_process_waits_for_a_late_server_that_makes_progress(tmp_path: Path) -> None:
    # Ready after ~2.5 s of CPU work: longer than the 1 s without progress that is allowed.
    server = ScriptServer(tmp_path, LATE_SERVER, "2.5")
    try:
        server.start(1.0)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert _open_handles(server.log_path) == []
    finally:
        server.stop()
    _assert_gone(server)


def test_server_process_ceiling_scales_with_load_and_obeys_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(server_process.START_TIMEOUT_ENV, raising=False)
    cpus = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    idle = start_ceiling_s()
    assert idle == server_process.BASE_CEILING_S
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * cpus, 0.0, 0.0))
    assert start_ceiling_s() == min(server_process.MAX_DEFAULT_CEILING_S, 2 * idle)
    monkeypatch.setenv(server_process.START_TIMEOUT_ENV, "900")
    assert start_ceiling_s() == 900.0
