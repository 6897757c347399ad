"""One job on a virtual worker: the calls it makes to the coordinator, at their times."""

from __future__ import annotations

from collections.abc import Callable

from tuner.coordinator import Assignment

REPORT, HEARTBEAT, COMPLETE = 0, 1, 2

Call = tuple[float, int, int]
"""(virtual time, kind, step)."""


def report_steps(
    first: int, last: int, levels: tuple[int, ...], stopping: bool, every_step: bool
) -> list[int]:
    """Steps in ``(first, last)`` to report at before ``complete`` at ``last``.

    Every step when ``every_step``; otherwise only where the scheduler decides: the rungs a
    stopping-form job passes (a promotion-form job is judged once, at its end).
    """
    if every_step:
        return list(range(first + 1, last))
    if stopping:
        return [level for level in levels if first < level < last]
    return []


def plan_calls(
    start: float, first: int, last: int, unit_s: float, steps: list[int], heartbeat_s: float
) -> list[Call]:
    """The calls of a job trained from ``first`` to ``last`` at ``unit_s`` per unit: its
    reports, ``complete`` at the end, and heartbeats every ``heartbeat_s`` in longer gaps
    (as the worker agent sends them, so a live job never loses its lease)."""
    calls: list[Call] = [(start + (s - first) * unit_s, REPORT, s) for s in steps]
    calls.append((start + (last - first) * unit_s, COMPLETE, last))
    if (last - first) * unit_s <= heartbeat_s:
        return calls  # the common case: no gap can be long
    out: list[Call] = []
    previous = start
    for call in calls:
        beat = previous + heartbeat_s
        while beat < call[0]:
            out.append((beat, HEARTBEAT, 0))
            beat += heartbeat_s
        out.append(call)
        previous = call[0]
    return out


class JobRun:
    """The job a worker is training: its calls still to make, and its lease token."""

    __slots__ = (
        "calls",
        "checkpoint_step",
        "curve",
        "drop_at",
        "from_resource",
        "job_id",
        "next_call",
        "started_at",
        "to_resource",
        "token",
        "trial_id",
        "unit_s",
    )

    def __init__(
        self,
        assignment: Assignment,
        started_at: float,
        unit_s: float,
        calls: list[Call],
        drop_at: float | None,
        curve: Callable[[float], float],
    ) -> None:
        job = assignment.job
        self.job_id, self.token, self.trial_id = job.id, assignment.lease_token, job.trial_id
        self.from_resource, self.to_resource = job.from_resource, job.to_resource
        self.started_at, self.unit_s = started_at, unit_s
        self.calls, self.next_call, self.drop_at = calls, 0, drop_at
        self.checkpoint_step = job.from_resource  # the last step saved (reported)
        self.curve = curve

    def checkpoint(self, step: int) -> str:
        """The opaque checkpoint reference sent with a report or completion at ``step``."""
        return f"sim://trial/{self.trial_id}/step/{step}"
