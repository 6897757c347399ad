"""build_sampler: the one place where a SamplerConfig becomes a Sampler."""

from __future__ import annotations

from tuner.samplers.base import Sampler, SamplerConfig
from tuner.samplers.bohb import BohbSampler
from tuner.samplers.grid import GridSampler
from tuner.samplers.quasi import QuasiRandomSampler
from tuner.samplers.random import RandomSampler


def build_sampler(config: SamplerConfig, seed: int = 0) -> Sampler:
    """The sampler that ``config.type`` names, with ``config``'s knobs.

    ``seed`` is the experiment's: the quasi-random sequence is scrambled with it, so two
    experiments with the same space and different seeds get different points.
    """
    match config.type:
        case "random":
            return RandomSampler()
        case "grid":
            return GridSampler(count=config.grid_count)
        case "quasi":
            return QuasiRandomSampler(method=config.quasi_method, seed=seed)
        case "bohb":
            return BohbSampler(
                top_fraction=config.top_fraction,
                random_fraction=config.random_fraction,
                bandwidth_factor=config.bandwidth_factor,
                n_candidates=config.n_candidates,
                min_bandwidth=config.min_bandwidth,
            )
