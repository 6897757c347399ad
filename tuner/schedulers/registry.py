"""Build a scheduler from an experiment document."""

from __future__ import annotations

from tuner.config import ExperimentConfig
from tuner.schedulers.asha import Asha
from tuner.schedulers.base import Scheduler
from tuner.schedulers.pasha import Pasha
from tuner.schedulers.rungs import s_max
from tuner.schedulers.successive_halving import SyncSuccessiveHalving


def build_scheduler(config: ExperimentConfig) -> Scheduler:
    """The pure rule that the document's ``scheduler`` section names."""
    sc = config.scheduler
    r, big_r, eta = sc.min_resource, sc.max_resource, sc.eta
    match sc.type:
        case "sha":
            n = sc.n_configs or 0  # required for sha by SchedulerConfig's validation
            return SyncSuccessiveHalving(r, big_r, eta, ((sc.bracket, n),), sc.parallel_brackets)
        case "hyperband":
            return SyncSuccessiveHalving.hyperband(
                r, big_r, eta, sc.iterations, sc.parallel_brackets
            )
        case "asha":
            return Asha(r, big_r, eta, (sc.bracket,), sc.form == "stopping", config.seed)
        case "async_hyperband":
            rates = tuple(sc.brackets) if sc.brackets else tuple(range(s_max(r, big_r, eta) + 1))
            return Asha(r, big_r, eta, rates, sc.form == "stopping", config.seed)
        case "pasha":
            return Pasha(r, big_r, eta)
    raise AssertionError(f"unknown scheduler type {sc.type}")  # pydantic's Literal rules it out
