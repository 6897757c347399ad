"""What a simulation run measured."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RungSummary:
    """One rung of one bracket at the end of the run (``MemoryStore.rung_counts``)."""

    bracket: int
    rung: int
    resource: int
    n_results: int
    n_promoted: int


@dataclass(frozen=True)
class SimulationResult:
    """Measurements of one simulated experiment. Times are virtual seconds.

    - ``utilization``: busy worker time / (workers x ``wall_time``), over the whole run,
      including the end, when the budget stops new trials and the last promotions drain.
    - ``utilization_while_starting``: the same ratio over ``[0, last_trial_started_at]``,
      the period in which the scheduler could still start new trials (its budget had not
      stopped them). It measures idle time that the rule itself causes (waiting at rungs),
      without the unavoidable drain at the end of a finite budget.
    - ``resource_used``: resource units actually trained, counting each job's completed steps
      (a dropped job's steps up to the drop included); ``resource_charged`` is what the
      coordinator charged the budget (``Experiment.resource_used``); ``resource_wasted`` the
      steps of dropped jobs that no checkpoint kept.
    - ``n_completed_at_max_while_starting``: configurations trained to ``max_resource`` by
      ``last_trial_started_at``: with it, the steady-state rate of an asynchronous rule.
    - ``best_value``: the best value at ``max_resource`` (else the best anywhere), in the
      metric's own direction; ``None`` when nothing finite was reported.
    - ``worker_hours``: busy worker time / 3600 (GPU-hours when one worker is one GPU and the
      time unit is the second).
    """

    n_trials: int
    n_jobs: int
    n_claims: int
    n_events: int
    wall_time: float
    utilization: float
    utilization_while_starting: float
    last_trial_started_at: float
    time_to_first_max_resource: float | None
    n_completed_at_max: int
    n_completed_at_max_while_starting: int
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any] | None
    best_resource: int | None
    resource_used: int
    resource_charged: int
    resource_wasted: int
    worker_hours: float
    n_dropped: int
    n_reaped: int
    experiment_state: str
    stalled: bool
    truncated: bool
    trial_states: dict[str, int]
    rungs: list[RungSummary]
    settings: dict[str, Any]
    config: dict[str, Any] = field(repr=False)

    @property
    def gpu_hours(self) -> float:
        """Alias of ``worker_hours``."""
        return self.worker_hours

    @property
    def completed_at_max_per_hour(self) -> float:
        """Configurations trained to ``max_resource`` per virtual hour."""
        return 3600.0 * self.n_completed_at_max / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def completed_at_max_per_hour_while_starting(self) -> float:
        """The same rate over ``[0, last_trial_started_at]`` (steady state)."""
        window = self.last_trial_started_at
        return 3600.0 * self.n_completed_at_max_while_starting / window if window > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _finite(asdict(self))
        return data

    def to_json(self, indent: int | None = None) -> str:
        """One JSON object (non-finite numbers become null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
