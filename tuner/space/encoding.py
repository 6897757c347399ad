"""One parameter to and from the unit interval, and its discrete levels.

Discrete parameters (ints, stepped floats) own equal-width bins in transformed space
(linear or log), so a uniform draw picks every level with the same probability on a
linear scale and ``decode(encode(v)) == v`` exactly. Categoricals use bin centres
``(i + 0.5) / n``; fixed parameters encode as ``0.5``.
"""

from __future__ import annotations

import math

from tuner.space.keys import JSONScalar
from tuner.space.params import Categorical, Fixed, Float, Int

Numeric = Float | Int
AnyParam = Float | Int | Categorical | Fixed


def n_levels(param: AnyParam) -> int | None:
    """How many values the parameter can take; ``None`` for a continuous float."""
    match param:
        case Categorical():
            return len(param.choices)
        case Fixed():
            return 1
        case Int():
            return (param.high - param.low) // (param.step or 1) + 1
        case Float():
            if param.step is None:
                return None
            return math.floor((param.high - param.low) / param.step + 1e-9) + 1


def level_value(param: Numeric, k: int) -> int | float:
    """The ``k``-th discrete value ``low + k * step`` of an int or stepped float."""
    if isinstance(param, Int):
        return param.low + k * (param.step or 1)
    if param.step is None:
        raise ValueError("a continuous float has no levels")
    return min(tidy_float(param.low + k * param.step), param.high)


def tidy_float(value: float) -> float:
    """Round away binary noise (``0.30000000000000004`` -> ``0.3``) at 12 significant digits."""
    return float(f"{value:.12g}")


def kind(param: AnyParam) -> int | None:
    """The number of categories for a categorical dimension (1 if fixed), ``None`` if ordinal."""
    match param:
        case Categorical():
            return len(param.choices)
        case Fixed():
            return 1
        case _:
            return None


def _forward(param: Numeric, value: float) -> float:
    return math.log(value) if param.log else value


def _inverse(param: Numeric, t: float) -> float:
    return math.exp(t) if param.log else t


def _step(param: Numeric) -> float | None:
    if isinstance(param, Int):
        return param.step or 1
    return param.step


def transformed_bounds(param: Numeric) -> tuple[float, float]:
    """The interval of transformed space that maps onto ``[0, 1]``.

    For discrete parameters it reaches half a level beyond the first and last levels.
    """
    step, n = _step(param), n_levels(param)
    if step is None or n is None:
        return _forward(param, param.low), _forward(param, param.high)
    first, last = float(param.low), float(param.low + (n - 1) * step)
    if not param.log:
        return first - step / 2, last + step / 2
    # n >= 2 because step <= high - low; half a level in log space on each side.
    lo = math.log(first) - (math.log(first + step) - math.log(first)) / 2
    hi = math.log(last) + (math.log(last) - math.log(last - step)) / 2
    return lo, hi


def encode_value(param: AnyParam, value: object) -> float:
    """The position of ``value`` in ``[0, 1]``; ``ValueError`` if it does not belong."""
    match param:
        case Categorical():
            return (param.index(value) + 0.5) / len(param.choices)
        case Fixed():
            return 0.5
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if param.log and value <= 0:
        raise ValueError(f"{value!r} is not > 0 on a log scale")
    lo, hi = transformed_bounds(param)
    return min(max((_forward(param, float(value)) - lo) / (hi - lo), 0.0), 1.0)


def decode_value(param: AnyParam, x: float) -> JSONScalar:
    """The value at position ``x`` (clipped into ``[0, 1]``)."""
    x = min(max(float(x), 0.0), 1.0)
    match param:
        case Categorical():
            n = len(param.choices)
            return param.choices[min(int(x * n), n - 1)]
        case Fixed():
            return param.value
    if n_levels(param) is None and x in (0.0, 1.0):
        return param.low if x == 0.0 else param.high  # exact ends, free of exp(log) noise
    lo, hi = transformed_bounds(param)
    return _snap(param, _inverse(param, lo + x * (hi - lo)))


def _snap(param: Numeric, raw: float) -> int | float:
    """``raw`` clipped into range and, if discrete, rounded to the nearest level."""
    step, n = _step(param), n_levels(param)
    if step is None or n is None:
        return min(max(raw, param.low), param.high)
    k = min(max(math.floor((raw - param.low) / step + 0.5), 0), n - 1)
    return level_value(param, k)


def spaced_values(param: Numeric, count: int) -> list[int | float]:
    """``count`` points from ``low`` to ``high``, evenly spaced in transformed space.

    Discrete parameters with at most ``count`` levels give every level; otherwise points
    snap to the nearest level and repeats are dropped (order kept).
    """
    n = n_levels(param)
    if n is not None and n <= count:
        return [level_value(param, k) for k in range(n)]
    lo, hi = _forward(param, param.low), _forward(param, param.high)
    values: dict[int | float, None] = {}  # ordered, and a repeat costs nothing
    for j in range(count):
        raw = _inverse(param, lo + (hi - lo) * j / (count - 1))
        raw = param.low if j == 0 else param.high if j == count - 1 else raw
        values[_snap(param, tidy_float(raw) if n is None else raw)] = None
    return list(values)
