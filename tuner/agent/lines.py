"""What ``tuner worker`` tells the person running it, one line at a time on stderr: a line
when it starts (server, experiment, slots), a line when each job starts (trial ``EXP/NUM``,
parameters, resources, slot) and when it ends (outcome, duration, why; the command's last
lines under it when it failed), and a line when it exits (why). ``--quiet`` keeps the first
and the last. The words match the dashboard's: a trial that ended its rung without being
stopped is *waiting at rung k* for a promotion."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.wire import JobOut

#: Lines of the command's output shown under a failure.
FAILURE_LINES = 10
#: Characters of the parameters shown in a job's start line.
PARAMS_CHARS = 90
#: An outcome's words in the exit line's counts: a job that ended "waiting" reached its rung
#: (its trial may have been stopped or promoted since).
SUMMARY_WORDS = {"waiting": "reached their rung", "completed": "completed a trial"}

Write = Callable[[str, str], None]
"""``write(text, style)``: one line (or a failure's indented tail) to show; ``style`` is
``""``, ``"failed"`` or ``"dim"`` (the CLI colours them; plain text elsewhere)."""


@dataclass(frozen=True)
class Outcome:
    """How one job ended. ``kind`` (counted in the exit line): ``completed``, ``waiting``,
    ``stopped``, ``failed``, ``lost`` or ``released``; ``text``: the words after the trial;
    ``tail``: the command's last lines, shown under a failure."""

    kind: str
    text: str
    tail: str = ""


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def short_params(params: Mapping[str, Any], limit: int = PARAMS_CHARS) -> str:
    """``lr=0.0123 width=64 act=relu``, cut with ``…`` past ``limit`` characters."""
    text = " ".join(f"{name}={_short(value)}" for name, value in params.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration_text(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h01m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def exit_code_text(code: int | None) -> str:
    """``exit code 1``, or ``killed by SIGKILL`` for a negative (signal) code."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def slot_name(index: int, device: str | None) -> str:
    """``gpu 0`` for a GPU slot, ``slot 1`` for a CPU slot."""
    return f"gpu {device}" if device is not None else f"slot {index}"


def trial_name(job: JobOut) -> str:
    """The trial as people type it: ``EXP/NUM``."""
    return f"{job.experiment_id}/{job.trial_number}"


def _rung_of(reason: Mapping[str, Any], job: JobOut) -> int:
    rung = reason.get("rung")
    return rung if isinstance(rung, int) else job.rung


def decision_outcome(kind: str, reason: Mapping[str, Any], job: JobOut) -> Outcome:
    """The outcome of a job whose trial the service judged: ``kind`` is the decision
    (``complete``, ``pause`` or ``stop``), ``reason`` its facts (rule, rung, n, threshold)."""
    rule = str(reason.get("rule", ""))
    rung = _rung_of(reason, job)
    if kind == "complete":
        return Outcome("completed", f"completed: reached the maximum resource ({job.to_resource})")
    if kind == "pause":
        return Outcome("waiting", f"waiting at rung {rung} for a promotion")
    if rule == "manual_stop":
        return Outcome("stopped", "stopped by hand")
    if rule == "cancelled":
        return Outcome("stopped", "stopped: the experiment was cancelled")
    if rule == "non_finite":
        return Outcome("stopped", "stopped by the scheduler: the value is not finite (diverged)")
    if rule == "already_stopped":
        return Outcome("stopped", f"stopped (the trial is {reason.get('note') or 'stopped'})")
    if rule == "budget":
        why = reason.get("note") or "the experiment ended before a promotion"
        return Outcome("stopped", f"stopped at rung {rung}: {why}")
    text = f"stopped by the scheduler at rung {rung}"
    n, threshold = reason.get("n"), reason.get("threshold")
    if isinstance(n, int) and isinstance(threshold, int):
        text += f": not in the top {threshold} of the rung's {n}"
    elif reason.get("note"):
        text += f": {reason['note']}"
    return Outcome("stopped", text)


def tail_lines(text: str, lines: int = FAILURE_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


class Lines:
    """Says what the agent does. Thread-safe: the slots share it."""

    def __init__(self, write: Write | None, *, quiet: bool = False) -> None:
        self._write = write
        self.quiet = quiet
        self._lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self._last_error: tuple[str, str] | None = None  # (last line, the trial that said it)

    def _say(self, text: str, style: str = "", *, job_line: bool = False) -> None:
        if self._write is None or (job_line and self.quiet):
            return
        with self._lock:
            self._write(f"{time.strftime('%H:%M:%S')} {text}", style)

    def agent_started(
        self, url: str, worker_id: str, experiment_id: int | None, slots: Sequence[str]
    ) -> None:
        serves = f"experiment {experiment_id}" if experiment_id is not None else "any experiment"
        kinds = "GPU" if slots and slots[0].startswith("gpu") else "CPU"
        count = f"{len(slots)} {kinds} slot{'s' if len(slots) != 1 else ''}"
        if kinds == "GPU":
            count += f" ({', '.join(s.removeprefix('gpu ') for s in slots)})"
        self._say(f"worker {worker_id}: serving {serves} of {url}, {count}")

    def job_started(self, job: JobOut, slot: str) -> None:
        resumed = " from its checkpoint" if job.checkpoint else ""
        self._say(
            f"{slot}: {trial_name(job)} started, resource {job.from_resource}→{job.to_resource}"
            f" (rung {job.rung}){resumed}; {short_params(job.params)}",
            job_line=True,
        )

    def job_ended(self, job: JobOut, slot: str, outcome: Outcome, seconds: float) -> None:
        with self._lock:
            self.outcomes[outcome.kind] += 1
        failed = outcome.kind in ("failed", "lost")
        self._say(
            f"{slot}: {trial_name(job)} {outcome.text} [{duration_text(seconds)}]",
            "failed" if failed else "",
            job_line=True,
        )
        if outcome.tail and self._write is not None and not self.quiet:
            self._show_tail(self._write, trial_name(job), outcome.tail)

    def _show_tail(self, write: Write, trial: str, tail: str) -> None:
        """The failure's last lines, indented; a failure that ends with the same line as
        the one before shows that line alone (a crash loop is not repeated in full)."""
        lines = tail.splitlines()
        with self._lock:
            before = self._last_error
            if before is not None and before[0] == lines[-1]:
                lines = [f"{lines[-1]}  (the same error as {before[1]}'s, above)"]
            else:
                self._last_error = (lines[-1], trial)
            write("\n".join(f"    | {line}" for line in lines), "dim")

    def note(self, text: str) -> None:
        """A change of the agent's own state (not a job's), shown even with ``--quiet``."""
        self._say(text)

    def agent_exits(self, why: str, *, error: bool = False) -> None:
        """The last line: why it leaves (``error``: on an error its caller shows)."""
        done = sum(self.outcomes.values())
        counts = ", ".join(
            f"{n} {SUMMARY_WORDS.get(kind, kind)}" for kind, n in sorted(self.outcomes.items())
        )
        summary = f" after {done} job{'s' if done != 1 else ''} ({counts})" if done else ""
        self._say(f"worker exits{summary}" + (" on an error" if error else f": {why}"))


__all__ = [
    "FAILURE_LINES",
    "Lines",
    "Outcome",
    "decision_outcome",
    "duration_text",
    "exit_code_text",
    "short_params",
    "slot_name",
    "tail_lines",
    "trial_name",
]
