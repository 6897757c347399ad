"""Quasi-random search: scrambled Sobol' or Halton points decoded into the space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tuner.rng import stable_hash
from tuner.samplers.base import SamplerHistory
from tuner.samplers.random import is_unseen, sample_unseen
from tuner.space import Params, SearchSpace


@dataclass(frozen=True)
class QuasiRandomSampler:
    """Trial ``n`` gets point ``n`` of one low-discrepancy sequence in ``[0, 1]^dims``.

    The sequence must be the same for every trial of an experiment, so its scrambling is
    seeded from ``seed`` and the space's JSON (not from the per-trial ``rng``, which would
    start a new sequence each time). When a point decodes to a seen configuration (discrete
    spaces), the next ``max_skips`` points are tried, then a random unseen configuration.
    """

    method: Literal["sobol", "halton"] = "sobol"
    seed: int = 0
    max_skips: int = 64

    def sample(
        self, space: SearchSpace, history: SamplerHistory, rng: np.random.Generator
    ) -> Params:
        engine = self._engine(space)
        if history.n_trials:  # Sobol's fast_forward(0) underflows on a fresh engine
            engine.fast_forward(history.n_trials)
        for point in engine.random(self.max_skips):
            params = space.decode(point)
            if is_unseen(history, params):
                return params
        return sample_unseen(space, history, rng)

    def _engine(self, space: SearchSpace) -> Any:
        # SciPy is imported here: `import tuner` in a training script should not pay for it.
        from scipy.stats import qmc  # type: ignore[import-untyped,unused-ignore]

        seed = stable_hash(self.seed, "quasi", self.method, space.to_json())
        if self.method == "sobol":
            return qmc.Sobol(space.dims, scramble=True, seed=seed)
        return qmc.Halton(space.dims, scramble=True, seed=seed)
