"""Rules that involve several parameters: names, condition parents and cycles.

Each rule yields ``(loc, message)`` pairs; messages start with the parameter's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from tuner.space.encoding import AnyParam
from tuner.space.keys import scalar_key
from tuner.space.params import Categorical, Fixed

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

Problem = tuple[tuple[str, ...], str]


def name_problems(names: list[object]) -> Iterator[Problem]:
    """Names must match ``NAME_PATTERN`` (they become JSON keys, columns and CLI flags)."""
    for name in names:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            yield (str(name),), f"{name!r}: name must match {NAME_PATTERN.pattern}"


def condition_problems(params: Mapping[str, AnyParam]) -> Iterator[Problem]:
    """Parents exist, are categorical or fixed, offer the values, and form no cycle."""
    if not params:
        yield (), "search space must not be empty"
        return
    for name, param in params.items():
        condition = param.condition
        if condition is None:
            continue
        loc = (name, "condition")
        parent = params.get(condition.parent)
        if parent is None:
            yield loc, f"{name}: condition parent {condition.parent!r} is not a parameter"
        elif not isinstance(parent, Categorical | Fixed):
            yield loc, f"{name}: condition parent {condition.parent!r} must be categorical or fixed"
        else:
            offered = parent.choices if isinstance(parent, Categorical) else [parent.value]
            for value in condition.values:
                if not any(scalar_key(value) == scalar_key(o) for o in offered):
                    yield (
                        loc,
                        (
                            f"{name}: condition value {value!r} is not a choice of "
                            f"{condition.parent!r}"
                        ),
                    )
    yield from _cycle_problems(params)


def _cycle_problems(params: Mapping[str, AnyParam]) -> Iterator[Problem]:
    reported: set[str] = set()
    for start in params:
        path = [start]
        current = params[start].condition
        while current is not None and current.parent in params:
            if current.parent in path:
                cycle = path[path.index(current.parent) :]
                if not reported.intersection(cycle):
                    reported.update(cycle)
                    shown = " -> ".join([*cycle, current.parent])
                    yield (start, "condition"), f"{start}: conditions form a cycle: {shown}"
                break
            path.append(current.parent)
            current = params[current.parent].condition


def topological_order(params: Mapping[str, AnyParam]) -> tuple[str, ...]:
    """Names with every parent before its children, otherwise in declaration order."""
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        condition = params[name].condition
        if condition is not None:
            place(condition.parent)
        placed.add(name)
        order.append(name)

    for name in params:
        place(name)
    return tuple(order)
