"""One training process: started in its own process group, its output kept (the tail) and
relayed, terminated as a group (SIGTERM, then SIGKILL after a grace period)."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from tuner.client.job import wire_text

log = logging.getLogger(__name__)

#: Lines of output kept per trial.
TAIL_LINES = 200
#: Characters of one line kept (a progress bar without newlines stays bounded).
MAX_LINE_CHARS = 2000

_PR_SET_PDEATHSIG = 1


def _death_signal_hook() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook asking the kernel to SIGKILL the child when the agent
    thread that started it dies (a SIGKILLed agent must not leave a training process that
    keeps its lease alive by reporting)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return hook


_PRE_EXEC = _death_signal_hook()


class TrialProcess:
    """A running command with its output collected by a reader thread."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.command = list(command)
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._unsent: list[str] = []
        self._lock = threading.Lock()
        self._echo = echo
        self.terminated_by_agent = False
        self.popen = subprocess.Popen(  # noqa: S603 - the user's own command
            self.command,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_PRE_EXEC,  # noqa: PLW1509 - only a prctl call
        )
        self._reader = threading.Thread(
            target=self._read, name=f"tuner-output-{self.popen.pid}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        stream = self.popen.stdout
        if stream is None:  # pragma: no cover - stdout is a pipe
            return
        for raw in iter(stream.readline, b""):
            # NUL cannot be stored as text (the server refuses it): shown as U+FFFD, like
            # the bytes that are not UTF-8.
            line = wire_text(raw.decode("utf-8", errors="replace"))
            if len(line) > MAX_LINE_CHARS:
                line = line[: MAX_LINE_CHARS - 4] + "...\n"
            with self._lock:
                self._tail.append(line)
                self._unsent.append(line)
            if self._echo is not None:
                self._echo(line)
        stream.close()

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The exit code, or None if still running after ``timeout_s``."""
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def finish_output(self, timeout_s: float = 2.0) -> None:
        """Wait for the reader to drain the pipe after the process ended."""
        self._reader.join(timeout_s)

    def take_unsent(self) -> str:
        """The output produced since the last call."""
        with self._lock:
            text, self._unsent = "".join(self._unsent), []
        return text

    def tail(self, lines: int = TAIL_LINES) -> str:
        with self._lock:
            return "".join(list(self._tail)[-lines:])

    def terminate(self, grace_s: float) -> int:
        """SIGTERM to the process group, SIGKILL after ``grace_s``; the exit code."""
        self.terminated_by_agent = True
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.popen.poll() is None:
            log.info("event=kill pid=%d grace_s=%s", self.pid, grace_s)
            self._signal(signal.SIGKILL)
        code = self.popen.wait()
        # Children that outlived the leader (same group) get the same end.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return code

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.popen.send_signal(sig)
