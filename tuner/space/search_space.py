"""SearchSpace: named parameters, validated together, sampled, enumerated and encoded."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import ConfigDict, RootModel, ValidationError, model_validator
from pydantic_core import InitErrorDetails
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from tuner.errors import ConfigError
from tuner.space.encoding import AnyParam, decode_value, encode_value, kind, n_levels
from tuner.space.grid import GridPlan
from tuner.space.keys import JSONScalar, Params
from tuner.space.params import MAX_PARAMS, Param
from tuner.space.rules import Problem, condition_problems, name_problems, topological_order


class SearchSpace(RootModel[dict[str, Param]]):
    """An ordered mapping of parameter names to definitions.

    Validates from the document form ``{"lr": {"type": "float", "low": 1e-4, ...}}`` or from
    Python, ``SearchSpace({"lr": Float(low=1e-4, high=0.1, log=True)})``. Every error message
    starts with the parameter's name (``"lr: low must be < high"``). Immutable.

    Encoding: one dimension per parameter in declaration order (conditional and fixed ones
    included) in ``[0, 1]``; inactive conditional parameters encode as NaN.
    """

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="wrap")
    @classmethod
    def _validate_together(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        problems: list[Problem] = []
        if isinstance(data, Mapping) and len(data) > MAX_PARAMS:
            message = f"{len(data)} parameters, but at most {MAX_PARAMS} (docs/LIMITS.md)"
            detail = InitErrorDetails(
                type="value_error", loc=(), input=len(data), ctx={"error": message}
            )
            raise ValidationError.from_exception_data(cls.__name__, [detail])
        if isinstance(data, Mapping):
            problems.extend(name_problems(list(data)))
        errors: list[InitErrorDetails] = []
        space = None
        try:
            space = handler(data)
        except ValidationError as exc:
            errors.extend(_name_errors(exc))
        if isinstance(space, SearchSpace):
            problems.extend(condition_problems(space.root))
        errors[:0] = [
            InitErrorDetails(type="value_error", loc=loc, input=data, ctx={"error": message})
            for loc, message in problems
        ]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return space

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> SearchSpace:
        """Build a space from parameter definitions, raising ``ConfigError`` when invalid.

        Args:
            params: the document form (or ``Param`` models), keyed by parameter name.

        Returns:
            The validated space.

        Raises:
            ConfigError: with every problem, one per line, each naming its parameter.
        """
        try:
            return cls.model_validate(params)
        except ValidationError as exc:
            raise ConfigError("\n".join(_describe(error) for error in exc.errors())) from None

    # Structure -------------------------------------------------------------------------

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Parameter names in declaration order (the order of encoded dimensions)."""
        return tuple(self.root)

    @cached_property
    def dims(self) -> int:
        """The number of encoded dimensions: one per parameter."""
        return len(self.root)

    @cached_property
    def kinds(self) -> tuple[int | None, ...]:
        """Per dimension: the number of categories (1 for fixed), or ``None`` if ordinal."""
        return tuple(kind(param) for param in self.root.values())

    @cached_property
    def _order(self) -> tuple[str, ...]:
        return topological_order(self.root)

    def active_names(self, values: Mapping[str, object]) -> set[str]:
        """The parameters that exist given ``values`` (parents decide their children)."""
        active: set[str] = set()
        for name in self._order:
            condition = self.root[name].condition
            if condition is None or (
                condition.parent in active
                and condition.parent in values
                and condition.holds(values[condition.parent])
            ):
                active.add(name)
        return active

    def to_json(self) -> str:
        """The document form as JSON; ``SearchSpace.model_validate_json`` reads it back."""
        return self.model_dump_json()

    # Sampling and encoding -------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> Params:
        """A random configuration: uniform (log-uniform on log scales) per parameter.

        Draws exactly ``dims`` uniforms from ``rng``, so the stream is stable.
        """
        return self.decode(rng.random(self.dims))

    def encode(self, params: Mapping[str, object]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The configuration as a point of ``[0, 1]^dims``; inactive parameters are NaN.

        Raises:
            ValueError: an active parameter is missing or has a value outside the space.
        """
        active = self.active_names(params)
        x = np.full(self.dims, np.nan)
        for i, (name, param) in enumerate(self.root.items()):
            if name not in active:
                continue
            if name not in params:
                raise ValueError(f"{name}: missing from the configuration")
            try:
                x[i] = encode_value(param, params[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return x

    def decode(self, x: Any) -> Params:
        """The configuration at point ``x``: clipped, rounded to ints, steps and categories.

        NaN is allowed only where the parameter is inactive; inactive ones are dropped.
        """
        point = np.asarray(x, dtype=np.float64)
        if point.shape != (self.dims,):
            raise ValueError(f"x has shape {point.shape}, but the space has {self.dims} dims")
        values: Params = {}
        for i, (name, param) in enumerate(self.root.items()):
            if not math.isnan(point[i]):
                values[name] = decode_value(param, float(point[i]))
        active = self.active_names(values)
        missing = [name for name in self.names if name in active and name not in values]
        if missing:
            raise ValueError(f"{missing[0]}: active, but its dimension is NaN")
        return {name: values[name] for name in self.names if name in active}

    def check(self, params: Mapping[str, object]) -> None:
        """Raise ``ConfigError`` unless ``params`` is exactly one point of this space."""
        unknown = [name for name in params if name not in self.root]
        if unknown:
            raise ConfigError(f"{unknown[0]}: not a parameter of the search space")
        active = self.active_names(params)
        for name, param in self.root.items():
            if name in active and name not in params:
                raise ConfigError(f"{name}: missing from the configuration")
            if name not in active and name in params:
                raise ConfigError(f"{name}: given, but its condition does not hold")
            if name in params and not _belongs(param, params[name]):
                raise ConfigError(f"{name}: {params[name]!r} is not in the space")

    # Enumeration -----------------------------------------------------------------------

    def is_finite(self) -> bool:
        """Whether every parameter takes finitely many values (no continuous float)."""
        return all(n_levels(param) is not None for param in self.root.values())

    def cardinality(self) -> int | None:
        """The number of distinct configurations, or ``None`` when the space is continuous."""
        if not self.is_finite():
            return None
        return GridPlan.build(self.root, None).size()

    def grid_size(self, count: int = 5) -> int:
        """``len(self.grid(count))``, without building the list."""
        return GridPlan.build(self.root, _checked_count(count)).size()

    def grid(self, count: int = 5) -> list[Params]:
        """Every grid point, in a deterministic order with no duplicates.

        Categoricals give all choices, fixed their value, ints and stepped floats all levels
        when there are at most ``count`` of them, otherwise (and for floats) ``count`` points
        evenly spaced (log-aware). Conditional parameters expand only under the parent values
        that enable them.
        """
        plan = GridPlan.build(self.root, _checked_count(count))
        return [plan.point(i) for i in range(plan.size())]

    def grid_point(self, index: int, count: int | None = 5) -> Params:
        """Point ``index`` of ``grid(count)``; ``count=None`` enumerates a finite space fully.

        Raises:
            IndexError: ``index`` is not below the grid's size.
            ValueError: ``count=None`` on a space that is not finite.
        """
        if count is not None:
            _checked_count(count)
        elif not self.is_finite():
            raise ValueError("only a finite space can be enumerated completely")
        return GridPlan.build(self.root, count).point(index)


def _checked_count(count: int) -> int:
    if count < 2:
        raise ValueError(f"count is {count}, but must be >= 2")
    return count


def _belongs(param: AnyParam, value: object) -> bool:
    if param.type in ("int", "float") and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (param.type == "int" and not isinstance(value, int))
    ):
        return False
    try:
        x = encode_value(param, value)
    except ValueError:
        return False
    decoded = decode_value(param, x)
    if isinstance(decoded, float) and isinstance(value, int | float):
        return math.isclose(decoded, value, rel_tol=1e-9, abs_tol=1e-12)
    return decoded == value


def _name_errors(exc: ValidationError) -> list[InitErrorDetails]:
    """The handler's errors, with ``"<name>: "`` in front of our own rule messages."""
    errors: list[InitErrorDetails] = []
    for error in exc.errors():
        details = InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"])
        if error["type"] == "value_error" and error["loc"]:
            rule = str(error.get("ctx", {}).get("error", error["msg"]))
            details["ctx"] = {"error": f"{error['loc'][0]}: {rule}"}
        elif "ctx" in error:
            details["ctx"] = error["ctx"]
        errors.append(details)
    return errors


def _describe(error: Any) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


__all__ = ["JSONScalar", "SearchSpace"]
