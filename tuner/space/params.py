"""Parameter definitions: Float, Int, Categorical, Fixed and the Condition that gates them.

Each model checks its own rules and raises ``ValueError`` with the bare rule
(``"low must be < high"``); ``SearchSpace`` prefixes the parameter's name.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuner.space.keys import JSONScalar, scalar_key

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True)

# ---- limits (docs/LIMITS.md) -----------------------------------------------------------------
#: Int bounds: integers every JSON client reads exactly (a double's 53-bit mantissa).
MAX_INT_MAGNITUDE = 2**53
#: Float bounds: far beyond any hyperparameter, and ``high - low`` stays finite.
MAX_FLOAT_MAGNITUDE = 1e300
#: Values of a discrete parameter (an int's range over its step, a stepped float's levels).
MAX_LEVELS = 2**53
#: Choices of a categorical parameter.
MAX_CHOICES = 10_000
#: Parameters of one space: sampling, encoding and storing a trial's params cost time per
#: parameter inside a claim (which holds the experiment's lock).
MAX_PARAMS = 500

#: A positional field not given. Pydantic calls a model's own ``__init__`` with the
#: document's keys, so a missing one (``hihg:`` typed for ``high:``) must reach validation
#: ("Field required"), not raise ``TypeError`` (a 500 on the create route).
_UNSET: Any = object()


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not _UNSET}


def _is_integral(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _check_unique(values: list[JSONScalar], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{what} must be finite, got {value!r}")
        key = scalar_key(value)
        if key in seen:
            raise ValueError(f"{what} must not contain duplicates: {value!r}")
        seen.add(key)


def _check_range(
    low: float, high: float, log: bool, step: float | None, limit: float = MAX_FLOAT_MAGNITUDE
) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("bounds must be finite")
    if max(abs(low), abs(high)) > limit:
        raise ValueError(f"bounds must be within -{limit:g}..{limit:g} (docs/LIMITS.md)")
    if low >= high:
        raise ValueError("low must be < high")
    if log and low <= 0:
        raise ValueError("log scale needs low > 0")
    if step is not None:
        if not math.isfinite(step) or step <= 0:
            raise ValueError("step must be > 0")
        if step > (high - low) * (1 + 1e-9):
            raise ValueError("step must be <= high - low")
        if (high - low) / step > MAX_LEVELS:
            raise ValueError(
                f"step is too small: more than {MAX_LEVELS} values from low to high "
                "(docs/LIMITS.md); drop the step for a continuous range"
            )


class Condition(BaseModel):
    """The parameter exists only when ``parent`` (categorical or fixed) takes one of ``values``."""

    model_config = _MODEL_CONFIG

    parent: str
    values: list[JSONScalar]

    def __init__(
        self, parent: str = _UNSET, values: list[JSONScalar] = _UNSET, **data: Any
    ) -> None:
        super().__init__(**_given(parent=parent, values=values), **data)

    @field_validator("values")
    @classmethod
    def _values_not_empty(cls, values: list[JSONScalar]) -> list[JSONScalar]:
        if not values:
            raise ValueError("condition values must not be empty")
        _check_unique(values, "condition values")
        return values

    def holds(self, parent_value: object) -> bool:
        """Whether the parent's value enables the parameter (``True`` and ``1`` differ)."""
        key = scalar_key(parent_value)
        return any(scalar_key(value) == key for value in self.values)


class Float(BaseModel):
    """A real number in ``[low, high]``, optionally on a log scale or quantised by ``step``."""

    model_config = _MODEL_CONFIG

    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: float | None = None
    condition: Condition | None = None

    def __init__(self, low: float = _UNSET, high: float = _UNSET, **data: Any) -> None:
        super().__init__(**_given(low=low, high=high), **data)

    @model_validator(mode="after")
    def _check(self) -> Float:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class Int(BaseModel):
    """An integer in ``[low, high]`` (both inclusive), optionally on a log scale or stepped."""

    model_config = _MODEL_CONFIG

    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int | None = None
    condition: Condition | None = None

    def __init__(self, low: int = _UNSET, high: int = _UNSET, **data: Any) -> None:
        super().__init__(**_given(low=low, high=high), **data)

    @field_validator("low", "high", mode="before")
    @classmethod
    def _integral_bounds(cls, value: object) -> object:
        if not _is_integral(value):
            raise ValueError("int bounds must be integers")
        return value

    @field_validator("step", mode="before")
    @classmethod
    def _integral_step(cls, value: object) -> object:
        if value is not None and not _is_integral(value):
            raise ValueError("int step must be an integer")
        return value

    @model_validator(mode="after")
    def _check(self) -> Int:
        _check_range(self.low, self.high, self.log, self.step, MAX_INT_MAGNITUDE)
        return self


class Categorical(BaseModel):
    """One of a list of JSON scalars; the order of ``choices`` is the encoding order."""

    model_config = _MODEL_CONFIG

    type: Literal["categorical"] = "categorical"
    choices: list[JSONScalar]
    condition: Condition | None = None

    def __init__(self, choices: list[JSONScalar] = _UNSET, **data: Any) -> None:
        super().__init__(**_given(choices=choices), **data)

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, choices: list[JSONScalar]) -> list[JSONScalar]:
        if not choices:
            raise ValueError("choices must not be empty")
        if len(choices) > MAX_CHOICES:
            raise ValueError(f"{len(choices)} choices, but at most {MAX_CHOICES} (docs/LIMITS.md)")
        _check_unique(choices, "choices")
        return choices

    def index(self, value: object) -> int:
        """The position of ``value`` in ``choices``; ``ValueError`` when it is not a choice."""
        key = scalar_key(value)
        for i, choice in enumerate(self.choices):
            if scalar_key(choice) == key:
                return i
        raise ValueError(f"{value!r} is not one of the choices")


class Fixed(BaseModel):
    """A constant; useful as a condition parent and to record settings beside tuned ones."""

    model_config = _MODEL_CONFIG

    type: Literal["fixed"] = "fixed"
    value: JSONScalar
    condition: Condition | None = None

    def __init__(self, value: JSONScalar = _UNSET, **data: Any) -> None:
        super().__init__(**_given(value=value), **data)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: JSONScalar) -> JSONScalar:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"value must be finite, got {value!r}")
        return value


Param = Annotated[Float | Int | Categorical | Fixed, Field(discriminator="type")]
