"""``tuner quickstart --budget small`` as a user runs it: real server, real agents."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.worker.live import tuner_command

pytestmark = pytest.mark.slow


def _server_gone(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1.0)
    except httpx.TransportError:
        return True
    return False


def test_quickstart_small_ends_with_the_best_configuration(tmp_path: Path) -> None:
    done = subprocess.run(
        tuner_command(
            "quickstart", "--budget", "small", "--workers", "2", "--dir", str(tmp_path / "qs")
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in out + done.stderr
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ui", out)
    assert "admin token: tnr_" in out
    match = re.search(r"best configuration .*validation accuracy (\d\.\d+)", out)
    assert match, out
    assert float(match.group(1)) > 0.5
    url = re.search(r"server: (http://127\.0\.0\.1:\d+)", out)
    assert url and _server_gone(url.group(1))  # it stopped what it started
    assert (tmp_path / "qs" / "tuner.db").exists()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_quickstart_ctrl_c_stops_everything_and_exits_130(tmp_path: Path) -> None:
    log = tmp_path / "out.txt"
    with log.open("w") as out:
        process = subprocess.Popen(
            tuner_command(
                "quickstart", "--budget", "small", "--workers", "2", "--dir", str(tmp_path / "qs")
            ),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
            # As from a terminal: a shell without job control starts background commands
            # with SIGINT ignored, which Python then keeps (and Ctrl-C would never arrive).
            preexec_fn=_default_sigint,
        )
        deadline = time.monotonic() + 90
        while "worker agents" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)
        assert process.poll() is None, log.read_text()  # still running when interrupted
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        took = time.monotonic() - sent
    text = log.read_text()
    assert code == 130, f"exit {code} {took:.1f} s after SIGINT:\n{text}"
    assert "Traceback" not in text
    url = re.search(r"server: (http://127\.0\.0\.1:\d+)", text)
    assert url and _server_gone(url.group(1))
