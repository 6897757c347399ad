"""Rung and bracket arithmetic, in integers only.

Milestones are ``r * eta**k`` for every ``k`` with ``r * eta**k < R``, and then ``R`` itself:
the top rung is ``R`` even when ``R`` is not of that form. Repeated multiplication replaces
``floor(log(R / r, eta))``, which comes out one short at exact powers (log(243, 3) =
4.999999999999999) and silently drops a bracket.

Brackets are indexed by the minimum early-stopping rate ``s`` (Li et al., MLSys 2020): bracket
``s`` starts its trials at rung ``s``, so ``s = 0`` is the most aggressive bracket and
``s = s_max`` is random search at ``R``.
"""

from __future__ import annotations

from functools import lru_cache

from tuner.errors import ConfigError


@lru_cache(maxsize=256)
def rung_levels(min_resource: int, max_resource: int, eta: int) -> tuple[int, ...]:
    """Resource of every rung, strictly increasing, ending at ``max_resource``."""
    if eta < 2:
        raise ConfigError(f"eta is {eta}, but must be >= 2")
    if not 1 <= min_resource < max_resource:
        raise ConfigError(
            f"min_resource is {min_resource} and max_resource is {max_resource}, "
            "but need 1 <= min_resource < max_resource"
        )
    levels = []
    level = min_resource
    while level < max_resource:
        levels.append(level)
        level *= eta
    levels.append(max_resource)
    return tuple(levels)


def s_max(min_resource: int, max_resource: int, eta: int) -> int:
    """Index of the top rung: the largest early-stopping rate."""
    return len(rung_levels(min_resource, max_resource, eta)) - 1


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def hyperband_n(s: int, s_max_: int, eta: int) -> int:
    """Configurations that Hyperband starts in bracket ``s`` (JMLR 2018, Algorithm 1).

    In the paper's own index ``s' = s_max - s``: ``n = ceil((s_max + 1) / (s' + 1) * eta**s')``.
    """
    s_prime = s_max_ - s
    return ceil_div((s_max_ + 1) * eta**s_prime, s_prime + 1)


def rung_sizes(n: int, n_rungs: int, eta: int) -> tuple[int, ...]:
    """Synchronous successive halving: ``n`` configurations, each rung keeps ``floor(n_i / eta)``.

    Stops early when a rung would be empty.
    """
    sizes = [n]
    while len(sizes) < n_rungs and sizes[-1] // eta >= 1:
        sizes.append(sizes[-1] // eta)
    return tuple(sizes)
