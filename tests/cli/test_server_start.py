"""``tuner server`` as a newcomer starts it: its URL is printed once the server answers, and
a port in use is one line saying what to do, before any database or token is made."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server_process import free_port, start_ceiling_s
from tests.worker.live import ADMIN_TOKEN, tuner_command


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
    return {**env, **extra}


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another server listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_server_port_in_use_is_one_line_and_makes_nothing(held_port: int, tmp_path: Path) -> None:
    done = subprocess.run(
        tuner_command("server", "--port", str(held_port)),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=start_ceiling_s(),
        check=False,
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: port {held_port} is in use: stop the other server or pick another with --port"
    ]
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no tuner.db, so no admin token either


def test_server_prints_its_url_once_it_answers(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        tuner_command("server", "--port", str(port), "--db", f"sqlite:///{tmp_path / 't.db'}"),
        cwd=tmp_path,
        env=_env(TUNER_ADMIN_TOKEN=ADMIN_TOKEN),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + start_ceiling_s()
        seen: list[str] = []
        while not any("tuner server on" in line for line in seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and process.poll() is None, f"no banner; output: {seen}"
            try:
                seen.append(lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue
        # The banner is the promise that the URL answers: one request, no retry.
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert answer.status_code == 200
        assert seen[-1].strip() == (
            f"tuner server on http://127.0.0.1:{port} (dashboard: http://127.0.0.1:{port}/ui)"
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
