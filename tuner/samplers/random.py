"""Random search that never repeats a configuration while unseen ones remain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tuner.errors import SpaceExhausted
from tuner.samplers.base import SamplerHistory
from tuner.space import Params, SearchSpace, params_key

# Spaces up to this size are shuffled completely when random draws keep hitting seen
# points; larger ones are scanned from a random offset (only reached when nearly full).
_SHUFFLE_LIMIT = 1 << 20
CONTINUOUS_DRAWS_FACTOR = 16


def is_unseen(history: SamplerHistory, params: Params) -> bool:
    """Whether ``history`` has not proposed ``params`` yet."""
    return not history.has_params(params_key(params))


def sample_unseen(
    space: SearchSpace, history: SamplerHistory, rng: np.random.Generator, max_draws: int = 64
) -> Params:
    """A uniformly random configuration that ``history`` has not seen.

    Tries ``max_draws`` random draws; a finite space then falls back to visiting every
    configuration in random order. A continuous space (where a collision is practically
    impossible) gets ``CONTINUOUS_DRAWS_FACTOR`` times more draws before giving up.

    Raises:
        SpaceExhausted: every configuration of a finite space has been proposed, or a
            continuous space produced nothing but seen configurations.
    """
    size = space.cardinality()
    draws = max_draws if size is not None else max_draws * CONTINUOUS_DRAWS_FACTOR
    for _ in range(draws):
        params = space.sample(rng)
        if is_unseen(history, params):
            return params
    if size is None:
        raise SpaceExhausted(f"{draws} random draws all gave configurations already proposed")
    for index in _random_order(size, rng):
        params = space.grid_point(index, count=None)
        if is_unseen(history, params):
            return params
    raise SpaceExhausted(f"all {size} configurations of the search space have been proposed")


def _random_order(size: int, rng: np.random.Generator) -> Iterator[int]:
    if size <= _SHUFFLE_LIMIT:
        yield from (int(i) for i in rng.permutation(size))
        return
    start = int(rng.integers(size))
    yield from ((start + offset) % size for offset in range(size))


@dataclass(frozen=True)
class RandomSampler:
    """Uniform random search (log-uniform on log scales), without repeats."""

    max_draws: int = 64

    def sample(
        self, space: SearchSpace, history: SamplerHistory, rng: np.random.Generator
    ) -> Params:
        return sample_unseen(space, history, rng, self.max_draws)
