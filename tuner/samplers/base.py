"""The sampler contract: configuration, the history a sampler may read, and the protocol."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tuner.space import Params, SearchSpace

#: Points per continuous axis of a grid (docs/LIMITS.md).
MAX_GRID_COUNT = 10_000


class SamplerConfig(BaseModel):
    """Which sampler proposes new configurations, and its knobs.

    ``grid_count`` is the number of points per continuous axis of the grid; ``quasi_method``
    picks the low-discrepancy sequence. The BOHB knobs follow Falkner et al. (2018):
    ``top_fraction`` of results form the good density, ``random_fraction`` of proposals are
    random, ``bandwidth_factor`` widens the good density when drawing ``n_candidates``, and
    ``min_bandwidth`` keeps kernels from collapsing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["random", "grid", "quasi", "bohb"] = "random"
    grid_count: int = Field(default=5, ge=2, le=MAX_GRID_COUNT)
    quasi_method: Literal["sobol", "halton"] = "sobol"
    top_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    random_fraction: float = Field(default=1 / 3, gt=0.0, lt=1.0)
    bandwidth_factor: float = Field(default=3.0, gt=0.0, allow_inf_nan=False)
    n_candidates: int = Field(default=64, ge=1)
    min_bandwidth: float = Field(default=1e-3, gt=0.0, allow_inf_nan=False)


class SamplerHistory(Protocol):
    """What a sampler may know about the experiment so far.

    Storage answers it with indexed queries, the simulator and tests with plain lists; a
    sampler must not assume anything else about it.
    """

    @property
    def n_trials(self) -> int:
        """How many configurations the experiment has created so far."""
        ...

    def has_params(self, key: str) -> bool:
        """Whether a configuration with ``params_key`` ``key`` was already proposed.

        Args:
            key: ``tuner.space.params_key(params)``.
        """
        ...

    def results(self, min_count: int) -> tuple[int, list[tuple[Params, float]]] | None:
        """The results at the highest resource level that has at least ``min_count``.

        Args:
            min_count: the fewest results a level needs to be returned.

        Returns:
            ``(resource, [(params, loss), ...])`` where ``loss`` is lower-is-better and is
            ``math.inf`` for a failed or non-finite result; ``None`` if no level has enough.
        """
        ...


class Sampler(Protocol):
    """Proposes the next configuration of an experiment.

    Implementations are pure: the same space, history answers and generator state give the
    same configuration. All randomness comes from ``rng``; no I/O, clock or logging.
    """

    def sample(
        self, space: SearchSpace, history: SamplerHistory, rng: np.random.Generator
    ) -> Params:
        """Propose a configuration that ``history`` has not seen.

        Args:
            space: the experiment's search space.
            history: what has been proposed and measured so far.
            rng: the only source of randomness, e.g. ``derive_rng(seed, "sample", n)``.

        Returns:
            A configuration of ``space`` (keys in declaration order).

        Raises:
            SpaceExhausted: every configuration of a finite space has been proposed.
        """
        ...
