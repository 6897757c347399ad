"""Plain builders for test data: experiment documents, snapshots and a driver loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tuner.coordinator as co
from tuner.domain import RungEntry
from tuner.storage.memory import MemoryStore


def make_document(scheduler: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "test",
        "metric": "loss",
        "mode": "min",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "scheduler": scheduler,
        "seed": 7,
    }
    doc.setdefault("lease_ttl_s", 86400)
    doc.update(overrides)
    return doc


def asha_document(**overrides: Any) -> dict[str, Any]:
    """A small ASHA experiment (r=1, R=9, eta=3) over ``lr`` and ``width``, for the suites
    that drive it over HTTP; keyword arguments replace top-level fields."""
    doc: dict[str, Any] = {
        "name": "test",
        "metric": "loss",
        "mode": "min",
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
            "width": {"type": "int", "low": 1, "high": 512},
        },
        "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9},
        "budget": {"max_trials": 12},
        "seed": 1,
        "lease_ttl_s": 60,
    }
    doc.update(overrides)
    return doc


@dataclass
class FakeSnapshot:
    """A Snapshot over plain dicts: rungs[(bracket, rung)] = {trial_number: loss}."""

    rungs: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict)
    promoted: set[tuple[int, int, int]] = field(default_factory=set)  # (bracket, rung, number)
    n_trials: int = 0
    n_active: int = 0
    can_start: bool = True
    scheduler_state: dict[str, Any] = field(default_factory=dict)
    brackets_of: dict[int, int] = field(default_factory=dict)

    def n_in_bracket(self, bracket: int) -> int:
        return sum(1 for b in self.brackets_of.values() if b == bracket)

    def _sorted(self, bracket: int, rung: int) -> list[tuple[float, int]]:
        return sorted((loss, n) for n, loss in self.rungs.get((bracket, rung), {}).items())

    def rung_size(self, bracket: int, rung: int) -> int:
        return len(self.rungs.get((bracket, rung), {}))

    def best_unpromoted(self, bracket: int, rung: int, top: int) -> RungEntry | None:
        for rank, (loss, n) in enumerate(self._sorted(bracket, rung)[:top]):
            if (bracket, rung, n) not in self.promoted and loss != float("inf"):
                return RungEntry(loss, n, rank)
        return None

    def count_better(self, bracket: int, rung: int, loss: float, limit: int) -> int:
        return min(sum(1 for value, _ in self._sorted(bracket, rung) if value < loss), limit)

    def rung_entries(self, bracket: int, rung: int) -> list[RungEntry]:
        return [RungEntry(loss, n, i) for i, (loss, n) in enumerate(self._sorted(bracket, rung))]


@dataclass
class Driver:
    """Runs an experiment through the coordinator on a MemoryStore, one job at a time or
    with several jobs in flight, with values from ``objective(params, resource)``."""

    document: dict[str, Any]
    objective: Callable[[dict[str, Any], int], float]
    store: MemoryStore = field(default_factory=MemoryStore)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.experiment = co.create_experiment(self.store, self.document, self.now)

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    def claim(self) -> co.ClaimResult:
        return co.claim(self.store, self.experiment.id, "w", self.tick())

    def finish(self, assignment: co.Assignment, report_steps: bool = False) -> Any:
        job = assignment.job
        params = assignment.trial.params
        if report_steps:
            for step in range(job.from_resource + 1, job.to_resource + 1):
                decision = co.report(
                    self.store,
                    job.id,
                    assignment.lease_token,
                    step,
                    self.objective(params, step),
                    self.tick(),
                )
                if decision.kind == "stop":
                    return decision
        value = self.objective(params, job.to_resource)
        return co.complete(self.store, job.id, assignment.lease_token, self.tick(), value)

    def run(self, workers: int = 1, report_steps: bool = False, max_steps: int = 100_000) -> None:
        running: list[co.Assignment] = []
        for _ in range(max_steps):
            while len(running) < workers:
                result = self.claim()
                if not isinstance(result, co.Assignment):
                    break
                running.append(result)
            if not running:
                if isinstance(self.claim(), co.ExperimentOver):
                    return
                raise RuntimeError("nothing running and the experiment is not over")
            self.finish(running.pop(0), report_steps)
        raise RuntimeError("experiment did not end")
