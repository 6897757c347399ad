"""Product-kernel density estimates on the unit cube, as BOHB uses them (numpy only).

Ordinal dimensions (floats, ints) get Gaussian kernels, categorical ones Aitchison-Aitken
kernels; bandwidths follow the normal reference rule ``1.059 * sigma * n ** (-1 / (d + 4))``
(as statsmodels' ``KDEMultivariate(bw="normal_reference")``), floored at ``min_bandwidth``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, np.dtype[np.float64]]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_TRUNCATION_ROUNDS = 100


def impute_inactive(data: Array, kinds: tuple[int | None, ...], rng: np.random.Generator) -> Array:
    """Fill NaN (inactive) entries with a value the column takes elsewhere, else at random.

    Follows BOHB's reference implementation, so inactive dimensions do not skew the density.
    """
    filled = data.copy()
    for j, kind in enumerate(kinds):
        column = filled[:, j]
        missing = np.isnan(column)
        if not missing.any():
            continue
        present = column[~missing]
        if present.size:
            column[missing] = rng.choice(present, size=int(missing.sum()))
        elif kind is None:
            column[missing] = rng.random(int(missing.sum()))
        else:
            column[missing] = (rng.integers(kind, size=int(missing.sum())) + 0.5) / kind
    return filled


def _categories(values: Array, kind: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.minimum((values * kind).astype(np.int64), kind - 1)


@dataclass(frozen=True)
class ProductKde:
    """A kernel density over encoded points ``data`` (n, d), NaN-free."""

    data: Array
    bandwidths: Array
    kinds: tuple[int | None, ...]

    @classmethod
    def fit(cls, data: Array, kinds: tuple[int | None, ...], min_bandwidth: float) -> ProductKde:
        """Bandwidths by the normal reference rule, floored at ``min_bandwidth``."""
        n, d = data.shape
        shrink = n ** (-1.0 / (d + 4))
        bandwidths = np.empty(d)
        for j, kind in enumerate(kinds):
            column = data[:, j] if kind is None else _categories(data[:, j], kind).astype(float)
            sigma = float(np.std(column, ddof=1)) if n > 1 else 0.0
            bandwidth = max(1.059 * sigma * shrink, min_bandwidth)
            if kind is not None:  # Aitchison-Aitken needs lambda <= (c - 1) / c
                bandwidth = min(bandwidth, (kind - 1) / kind) if kind > 1 else 0.0
            bandwidths[j] = bandwidth
        return cls(data=data, bandwidths=bandwidths, kinds=kinds)

    def log_density(self, points: Array) -> Array:
        """``log p(x)`` for every row of ``points`` (m, d)."""
        log_kernels = np.zeros((points.shape[0], self.data.shape[0]))
        for j, kind in enumerate(self.kinds):
            bandwidth = self.bandwidths[j]
            if kind is None:
                z = (points[:, j, None] - self.data[None, :, j]) / bandwidth
                log_kernels += -0.5 * z**2 - math.log(bandwidth) - _LOG_SQRT_2PI
            elif kind > 1:
                same = _categories(points[:, j], kind)[:, None] == _categories(
                    self.data[:, j], kind
                )
                log_kernels += np.where(
                    same, math.log1p(-bandwidth), math.log(bandwidth / (kind - 1))
                )
        peak = log_kernels.max(axis=1, keepdims=True)
        summed = np.log(np.exp(log_kernels - peak).sum(axis=1)) + peak[:, 0]
        result: Array = summed - math.log(self.data.shape[0])
        return result

    def sample(self, rng: np.random.Generator, count: int, bandwidth_factor: float) -> Array:
        """``count`` points around random data points, ordinal kernels widened by the factor.

        Ordinal dimensions draw from a normal truncated to ``[0, 1]`` (by rejection);
        a categorical dimension keeps its centre's category with probability ``1 - lambda``
        and is uniform otherwise, as in BOHB.
        """
        centres = self.data[rng.integers(self.data.shape[0], size=count)]
        points = np.empty_like(centres)
        for j, kind in enumerate(self.kinds):
            if kind is None:
                scale = self.bandwidths[j] * bandwidth_factor
                points[:, j] = _truncated_normal(centres[:, j], scale, rng)
            elif kind == 1:
                points[:, j] = 0.5
            else:
                keep = rng.random(count) < 1 - self.bandwidths[j]
                other = rng.integers(kind, size=count)
                chosen = np.where(keep, _categories(centres[:, j], kind), other)
                points[:, j] = (chosen + 0.5) / kind
        return points


def _truncated_normal(centres: Array, scale: float, rng: np.random.Generator) -> Array:
    values = np.full(centres.shape, np.nan)
    pending = np.ones(centres.shape, dtype=bool)
    for _ in range(_TRUNCATION_ROUNDS):
        count = int(pending.sum())
        if count == 0:
            break
        draws = rng.normal(centres[pending], scale)
        inside = (draws >= 0.0) & (draws <= 1.0)
        index = np.flatnonzero(pending)[inside]
        values[index] = draws[inside]
        pending[index] = False
    values[pending] = rng.random(int(pending.sum()))  # practically unreachable
    return values
