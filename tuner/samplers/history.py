"""ListHistory: an in-memory SamplerHistory for tests and small scripts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tuner.space import Params, params_key


@dataclass
class ListHistory:
    """Configurations and their losses per resource level, kept in plain containers."""

    proposed: list[Params] = field(default_factory=list)
    losses: dict[int, list[tuple[Params, float]]] = field(default_factory=dict)
    _keys: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._keys.update(params_key(params) for params in self.proposed)

    @property
    def n_trials(self) -> int:
        return len(self.proposed)

    def has_params(self, key: str) -> bool:
        return key in self._keys

    def add(self, params: Params) -> None:
        """Record a proposed configuration."""
        self.proposed.append(params)
        self._keys.add(params_key(params))

    def record(self, params: Params, resource: int, loss: float) -> None:
        """Record a result; non-finite losses are stored as ``math.inf`` (worst)."""
        stored = loss if math.isfinite(loss) else math.inf
        self.losses.setdefault(resource, []).append((params, stored))

    def results(self, min_count: int) -> tuple[int, list[tuple[Params, float]]] | None:
        for resource in sorted(self.losses, reverse=True):
            if len(self.losses[resource]) >= min_count:
                return resource, list(self.losses[resource])
        return None
