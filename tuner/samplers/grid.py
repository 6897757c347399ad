"""Grid search: the trials walk the grid of the space in its deterministic order."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from tuner.errors import SpaceExhausted
from tuner.samplers.base import SamplerHistory
from tuner.samplers.random import is_unseen
from tuner.space import Params, SearchSpace


@dataclass(frozen=True)
class GridSampler:
    """Trial ``n`` gets grid point ``n`` of ``space.grid(count)``, skipping seen points.

    The grid is addressed by index (``SearchSpace.grid_point``), never listed, so huge grids
    cost nothing up front. Points before ``n`` that are still unseen (say, ``n`` counted a
    hand-enqueued trial) are tried last, before ``SpaceExhausted``.
    """

    count: int = 5

    def __post_init__(self) -> None:
        if self.count < 2:
            raise ValueError(f"count is {self.count}, but must be >= 2")

    def sample(
        self,
        space: SearchSpace,
        history: SamplerHistory,
        rng: np.random.Generator,  # noqa: ARG002 (the protocol's; a grid needs no randomness)
    ) -> Params:
        size = space.grid_size(self.count)
        start = min(history.n_trials, size)
        for index in itertools.chain(range(start, size), range(start)):  # never listed
            params = space.grid_point(index, self.count)
            if is_unseen(history, params):
                return params
        raise SpaceExhausted(f"all {size} grid points have been proposed")
