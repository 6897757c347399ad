"""BOHB's model-based sampler: tree-structured Parzen densities over the best results.

Falkner, Klein and Hutter, "BOHB: Robust and Efficient Hyperparameter Optimization at
Scale", ICML 2018. Symbols: ``rho = random_fraction``, ``q = top_fraction``,
``b_w = bandwidth_factor``, ``N_s = n_candidates``; ``N_min = d + 1`` where ``d = dims``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner.samplers.base import SamplerConfig, SamplerHistory
from tuner.samplers.kde import Array, ProductKde, impute_inactive
from tuner.samplers.random import is_unseen, sample_unseen
from tuner.space import Params, SearchSpace


def split_good_bad(
    results: list[tuple[Params, float]], dims: int, top_fraction: float
) -> tuple[list[Params], list[Params]]:
    """The best ``max(d + 1, floor(q * n))`` and the worst ``max(d + 1, n - n_good)`` results.

    Non-finite losses rank worst; ties keep the order of ``results``. For small ``n`` the
    two sets overlap, as in BOHB.
    """
    n = len(results)
    ranked = sorted(
        range(n), key=lambda i: (results[i][1] if math.isfinite(results[i][1]) else math.inf, i)
    )
    n_good = max(dims + 1, math.floor(top_fraction * n))
    n_bad = max(dims + 1, n - n_good)
    good = [results[i][0] for i in ranked[:n_good]]
    bad = [results[i][0] for i in ranked[max(n - n_bad, 0) :]]
    return good, bad


@dataclass(frozen=True)
class BohbSampler:
    """Maximises ``l(x) / g(x)`` over candidates drawn from the good density ``l``.

    With probability ``random_fraction``, or while no resource level has ``d + 2`` results,
    the proposal is random. Otherwise results at the highest such level are split into good
    and bad, product KDEs are fitted to each, ``n_candidates`` are drawn from ``l`` with
    bandwidths times ``bandwidth_factor``, and the best ratio wins. A duplicate falls back to
    a random unseen configuration.
    """

    top_fraction: float = 0.15
    random_fraction: float = 1 / 3
    bandwidth_factor: float = 3.0
    n_candidates: int = 64
    min_bandwidth: float = 1e-3

    def __post_init__(self) -> None:
        # Validation lives in SamplerConfig; re-check so direct construction is safe too.
        SamplerConfig(
            type="bohb",
            top_fraction=self.top_fraction,
            random_fraction=self.random_fraction,
            bandwidth_factor=self.bandwidth_factor,
            n_candidates=self.n_candidates,
            min_bandwidth=self.min_bandwidth,
        )

    def sample(
        self, space: SearchSpace, history: SamplerHistory, rng: np.random.Generator
    ) -> Params:
        if rng.random() < self.random_fraction:
            return sample_unseen(space, history, rng)
        found = history.results(min_count=space.dims + 2)
        if found is None:
            return sample_unseen(space, history, rng)
        params = space.decode(self.propose(space, found[1], rng))
        return params if is_unseen(history, params) else sample_unseen(space, history, rng)

    def propose(
        self, space: SearchSpace, results: list[tuple[Params, float]], rng: np.random.Generator
    ) -> Array:
        """The encoded candidate with the best ``l(x) / g(x)`` given ``results``."""
        good, bad = split_good_bad(results, space.dims, self.top_fraction)
        densities = []
        for group in (good, bad):
            data = impute_inactive(np.array([space.encode(p) for p in group]), space.kinds, rng)
            densities.append(ProductKde.fit(data, space.kinds, self.min_bandwidth))
        l_good, g_bad = densities
        candidates = l_good.sample(rng, self.n_candidates, self.bandwidth_factor)
        scores = l_good.log_density(candidates) - g_bad.log_density(candidates)
        scores[~np.isfinite(scores)] = -np.inf
        best: Array = candidates[int(np.argmax(scores))]
        return best
