"""How long a job takes on a virtual worker: a time per resource unit, and straggler noise."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuner.errors import ConfigError
from tuner.space import SearchSpace


@dataclass(frozen=True)
class TimeModel:
    """Seconds per resource unit: ``unit_s``, or ``unit_s * (x / x_ref) ** exponent`` where
    ``x`` is the configuration's value of parameter ``param`` (e.g. ``width``: wider networks
    train proportionally slower) and ``x_ref`` the geometric middle of that parameter's range,
    so a configuration in the middle of the range costs ``unit_s`` per unit.
    """

    unit_s: float = 1.0
    param: str | None = None
    exponent: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.unit_s) and self.unit_s > 0):
            raise ConfigError(f"time_per_unit is {self.unit_s}, but must be a number > 0")
        if not math.isfinite(self.exponent):
            raise ConfigError(f"time exponent is {self.exponent}, but must be finite")

    @classmethod
    def parse(cls, spec: str | TimeModel) -> TimeModel:
        """``"constant"``, ``"constant:2.5"`` (seconds per unit) or ``"param:width"``."""
        if isinstance(spec, TimeModel):
            return spec
        kind, _, arg = spec.partition(":")
        if kind == "constant":
            try:
                return cls(float(arg) if arg else 1.0)
            except ValueError:
                raise ConfigError(f"time model: {arg!r} is not a number") from None
        if kind == "param" and arg:
            return cls(param=arg)
        raise ConfigError(
            f"time model: {spec!r} is not 'constant', 'constant:SECONDS' or 'param:NAME'"
        )

    def bind(self, space: SearchSpace) -> BoundTimeModel:
        """Check ``param`` against the experiment's space and fix its reference value."""
        if self.param is None:
            return BoundTimeModel(self.unit_s, None, 1.0, self.exponent)
        spec = space.root.get(self.param)
        low, high = getattr(spec, "low", None), getattr(spec, "high", None)
        if low is None or high is None:
            raise ConfigError(
                f"time model: the space has no numeric parameter {self.param!r} "
                f"(it has {', '.join(space.names) or 'none'})"
            )
        low_f, high_f = float(low), float(high)
        ref = math.sqrt(low_f * high_f) if low_f > 0 else (low_f + high_f) / 2 or 1.0
        return BoundTimeModel(self.unit_s, self.param, ref, self.exponent)

    def describe(self) -> str:
        if self.param is None:
            return f"constant {self.unit_s:g} s per resource unit"
        return f"{self.unit_s:g} s per unit x ({self.param} / its mid-range) ** {self.exponent:g}"


@dataclass(frozen=True)
class BoundTimeModel:
    unit_s: float
    param: str | None
    ref: float
    exponent: float

    def seconds_per_unit(self, params: Mapping[str, Any]) -> float:
        if self.param is None:
            return self.unit_s
        value = params.get(self.param)
        if value is None:  # an inactive conditional parameter
            return self.unit_s
        scale: float = max(abs(float(value)) / self.ref, 1e-9) ** self.exponent
        return self.unit_s * scale
