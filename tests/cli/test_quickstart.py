"""``tuner quickstart --budget small`` as a user runs it: real server, real agents."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.server_process import start_ceiling_s
from tests.worker.live import tuner_command

pytestmark = pytest.mark.slow


def _server_gone(url: str) -> bool:
    try:
        httpx.get(f"{url}/healthz", timeout=1.0)
    except httpx.TransportError:
        return True
    return False


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(process: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """Ctrl-C (the quickstart then stops the server and agents it started, which live in
    their own sessions: a SIGKILL would leave them running); SIGKILL if it is still there."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextmanager
def _quickstart(tmp_path: Path, out: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """``tuner quickstart --budget small`` writing to ``out``; interrupted on the way out,
    whatever the test did, so that a failing test leaves no server or agent behind."""
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
    try:
        yield process
    finally:
        _interrupt(process)


def test_quickstart_small_ends_with_the_best_configuration(tmp_path: Path) -> None:
    log = tmp_path / "out.txt"
    with log.open("wb") as out, _quickstart(tmp_path, out) as process:
        code = process.wait(180)
    out_text = log.read_text()
    assert code == 0, out_text
    assert "Traceback" not in out_text
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ui", out_text)
    assert "admin token: tnr_" in out_text
    match = re.search(r"best configuration .*validation accuracy (\d\.\d+)", out_text)
    assert match, out_text
    assert float(match.group(1)) > 0.5
    url = re.search(r"server: (http://127\.0\.0\.1:\d+)", out_text)
    assert url and _server_gone(url.group(1))  # it stopped what it started
    assert (tmp_path / "qs" / "tuner.db").exists()
    _check_best_against_the_database(out_text, tmp_path / "qs" / "tuner.db")


def _check_best_against_the_database(out_text: str, db: Path) -> None:
    """The last lines name the top of the ranking (docs/RESULTS.md) as EXP/NUM, with its
    value at the step it was ranked at (its report there) and its checkpoint's step."""
    from sqlalchemy import select

    from tuner.storage import queries
    from tuner.storage.database import make_engine, make_session_factory
    from tuner.storage.models import ReportRow

    best = re.search(
        r"best configuration \(trial (\d+)/(\d+)\): validation accuracy (\d\.\d+) at "
        r"epoch (\d+)", out_text,
    )
    saved = re.search(r"checkpoint: (\S+) \(saved at epoch (\d+)", out_text)
    assert best and saved, out_text
    engine = make_engine(f"sqlite:///{db}")
    try:
        with make_session_factory(engine)() as session:
            experiment_id = int(best.group(1))
            (top,) = queries.list_trials(session, experiment_id, order_by="best", limit=1).items
            value_there = session.scalar(
                select(ReportRow.value).where(
                    ReportRow.trial_id == top.id, ReportRow.step == top.ranked_step
                )
            )
    finally:
        engine.dispose()
    assert (int(best.group(2)), int(best.group(4))) == (top.number, top.ranked_step)
    assert top.ranked_loss is not None and value_there is not None
    assert f"{-top.ranked_loss:.4f}" == best.group(3) == f"{value_there:.4f}"  # maximised
    assert (saved.group(1), int(saved.group(2))) == (top.checkpoint, top.checkpoint_step)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_quickstart_ctrl_c_stops_everything_and_exits_130(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C, or a SIGTERM (``kill``, a CI runner's timeout), stops the server and the agents
    it started, which live in their own sessions and would otherwise outlive it."""
    log = tmp_path / "out.txt"
    with log.open("wb") as out, _quickstart(tmp_path, out) as process:
        # As long as a server start may take on this machine (it scales with the load).
        deadline = time.monotonic() + start_ceiling_s()
        while "worker agents" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)
        assert process.poll() is None, log.read_text()  # still running when interrupted
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(60)
        took = time.monotonic() - sent
    text = log.read_text()
    assert code == 130, f"exit {code} {took:.1f} s after {signum.name}:\n{text}"
    assert "Traceback" not in text
    url = re.search(r"server: (http://127\.0\.0\.1:\d+)", text)
    assert url and _server_gone(url.group(1))
