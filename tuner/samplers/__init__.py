"""Samplers propose configurations: random, grid, quasi-random (Sobol'/Halton) and BOHB."""

from tuner.samplers.base import Sampler, SamplerConfig, SamplerHistory
from tuner.samplers.bohb import BohbSampler
from tuner.samplers.grid import GridSampler
from tuner.samplers.quasi import QuasiRandomSampler
from tuner.samplers.random import RandomSampler
from tuner.samplers.registry import build_sampler

__all__ = [
    "BohbSampler",
    "GridSampler",
    "QuasiRandomSampler",
    "RandomSampler",
    "Sampler",
    "SamplerConfig",
    "SamplerHistory",
    "build_sampler",
]
