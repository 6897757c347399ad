"""The worker agent's lines, as words: what each outcome says, short parameters, durations,
exit codes, --quiet, and a crash loop's repeated traceback shown once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tuner.agent.lines import (
    Lines,
    Outcome,
    decision_outcome,
    duration_text,
    exit_code_text,
    short_params,
    slot_name,
    tail_lines,
)
from tuner.wire import JobOut


def _job(**overrides: Any) -> JobOut:
    fields: dict[str, Any] = {
        "job_id": 11, "lease_token": "t", "experiment_id": 2, "trial_id": 40, "trial_number": 3,
        "metric": "loss", "mode": "min", "params": {"lr": 0.0123456, "width": 64, "act": "relu"},
        "from_resource": 3, "to_resource": 9, "rung": 1, "bracket": 0, "checkpoint": None,
        "lease_expires_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    fields.update(overrides)
    return JobOut.model_validate(fields)


@pytest.mark.parametrize(
    ("kind", "reason", "expected"),
    [
        ("complete", {"rule": "max_resource"}, "completed: reached the maximum resource (9)"),
        ("pause", {"rule": "await_promotion", "rung": 1}, "waiting at rung 1 for a promotion"),
        ("stop", {"rule": "asha.stopping", "rung": 1, "rank": 2, "n": 7, "threshold": 2},
         "stopped by the scheduler at rung 1: not in the top 2 of the rung's 7"),
        ("stop", {"rule": "manual_stop", "rung": 1}, "stopped by hand"),
        ("stop", {"rule": "cancelled"}, "stopped: the experiment was cancelled"),
        ("stop", {"rule": "non_finite", "rung": 1},
         "stopped by the scheduler: the value is not finite (diverged)"),
        ("stop", {"rule": "budget", "rung": 0, "note": "experiment ended before a promotion"},
         "stopped at rung 0: experiment ended before a promotion"),
        ("stop", {"rule": "sha.cut"}, "stopped by the scheduler at rung 1"),
    ],
    ids=["complete", "pause", "asha-stop", "by-hand", "cancelled", "diverged", "budget",
         "other-rule"],
)
def test_decision_outcome_words(kind: str, reason: dict[str, Any], expected: str) -> None:
    outcome = decision_outcome(kind, reason, _job())
    assert outcome.text == expected
    assert outcome.kind == {"complete": "completed", "pause": "waiting"}.get(kind, "stopped")


def test_short_params_rounds_floats_and_cuts_long_ones() -> None:
    assert short_params({"lr": 0.0123456, "width": 64, "act": "relu"}) == (
        "lr=0.01235 width=64 act=relu"
    )
    long = short_params({f"p{i}": 0.123456789 for i in range(20)}, limit=40)
    assert len(long) == 40 and long.endswith("…")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (9.95, "9.9s"), (12.7, "12s"), (185, "3m05s"), (7260, "2h01m")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_exit_code_text_names_signals() -> None:
    assert exit_code_text(3) == "exit code 3"
    assert exit_code_text(-9) == "killed by SIGKILL"
    assert exit_code_text(-15) == "killed by SIGTERM"


def test_tail_lines_keeps_the_last_non_empty_lines() -> None:
    text = "".join(f"line {i}\n\n" for i in range(30))
    assert tail_lines(text, 3) == "line 27\nline 28\nline 29"


def _lines(quiet: bool = False) -> tuple[Lines, list[tuple[str, str]]]:
    said: list[tuple[str, str]] = []
    return Lines(lambda text, style: said.append((text, style)), quiet=quiet), said


def test_lines_of_one_job_and_the_exit() -> None:
    lines, said = _lines()
    lines.agent_started("http://h:1", "box-1", 2, [slot_name(0, "0"), slot_name(1, "1")])
    job = _job(checkpoint="/ck/step-3")
    lines.job_started(job, "gpu 1")
    lines.job_ended(job, "gpu 1", Outcome("waiting", "waiting at rung 1 for a promotion"), 12.3)
    lines.agent_exits("experiment 2 is over")
    texts = [text.split(" ", 1)[1] for text, _ in said]  # without the time
    assert texts == [
        "worker box-1: serving experiment 2 of http://h:1, 2 GPU slots (0, 1)",
        "gpu 1: 2/3 started, resource 3→9 (rung 1) from its checkpoint; "
        "lr=0.01235 width=64 act=relu",
        "gpu 1: 2/3 waiting at rung 1 for a promotion [12s]",
        "worker exits after 1 job (1 reached their rung): experiment 2 is over",
    ]


def test_a_failure_shows_its_tail_and_a_repeat_shows_only_its_last_line() -> None:
    lines, said = _lines()
    crash = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'"
    lines.job_ended(_job(), "slot 0", Outcome("failed", "failed: exit code 1", crash), 0.4)
    lines.job_ended(
        _job(trial_number=4), "slot 0", Outcome("failed", "failed: exit code 1", crash), 0.3
    )
    assert said[0] == (said[0][0], "failed") and "2/3 failed: exit code 1 [0.4s]" in said[0][0]
    assert said[1] == (
        "    | Traceback (most recent call last):\n"
        "    | ModuleNotFoundError: No module named 'torch'",
        "dim",
    )
    assert said[3][0] == (
        "    | ModuleNotFoundError: No module named 'torch'  (the same error as 2/3's, above)"
    )


def test_quiet_keeps_the_start_note_and_exit_lines_only() -> None:
    lines, said = _lines(quiet=True)
    lines.agent_started("http://h:1", "box-1", None, [slot_name(0, None)])
    lines.job_started(_job(), "slot 0")
    lines.job_ended(_job(), "slot 0", Outcome("failed", "failed", "Traceback"), 1.0)
    lines.note("experiment 2 is over; waiting for work")
    lines.agent_exits("SIGTERM received")
    texts = [text.split(" ", 1)[1] for text, _ in said]
    assert texts == [
        "worker box-1: serving any experiment of http://h:1, 1 CPU slot",
        "experiment 2 is over; waiting for work",
        "worker exits after 1 job (1 failed): SIGTERM received",
    ]


def test_an_exit_on_an_error_leaves_the_error_to_the_caller() -> None:
    lines, said = _lines()
    lines.agent_exits("nothing left to do", error=True)
    assert said[0][0].split(" ", 1)[1] == "worker exits on an error"
