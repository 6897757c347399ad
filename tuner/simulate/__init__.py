"""A discrete-event simulator of the tuning service: virtual workers on a virtual clock drive
the real coordinator and schedulers over an in-memory store, so it predicts what the service
does (promotions, idle workers, time to the first fully trained configuration) without GPUs.

    >>> from tuner.simulate import simulate
    >>> result = simulate(document, workers=32, objective="curves")  # doctest: +SKIP
    >>> result.time_to_first_max_resource, result.utilization  # doctest: +SKIP
"""

from tuner.simulate.engine import Progress, Simulator, simulate
from tuner.simulate.objectives import (
    OBJECTIVES,
    BoundObjective,
    Objective,
    ParamRange,
    get_objective,
)
from tuner.simulate.result import RungSummary, SimulationResult
from tuner.simulate.timing import TimeModel

__all__ = [
    "OBJECTIVES",
    "BoundObjective",
    "Objective",
    "ParamRange",
    "Progress",
    "RungSummary",
    "SimulationResult",
    "Simulator",
    "TimeModel",
    "get_objective",
    "simulate",
]
