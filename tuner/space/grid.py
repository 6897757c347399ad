"""Enumerating a space as a grid, by index, without listing it.

Conditions make the space a forest: every parameter has at most one parent (a categorical
or fixed parameter). A node's size is the sum, over its values, of the product of the sizes
of the children that value enables; the space's size is the product over the roots. Point
``i`` is found by mixed-radix decomposition (first root slowest), so a grid of any size
costs O(parameters x values) per point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tuner.space.encoding import AnyParam, level_value, n_levels, spaced_values
from tuner.space.keys import JSONScalar, Params
from tuner.space.params import Categorical, Fixed


class Levels(Sequence[JSONScalar]):
    """All levels of a discrete numeric parameter, computed on demand (ranges may be huge)."""

    def __init__(self, param: AnyParam) -> None:
        n = n_levels(param)
        if n is None or isinstance(param, Categorical | Fixed):
            raise ValueError("only ints and stepped floats have lazy levels")
        self._param, self._n = param, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> JSONScalar:  # type: ignore[override]
        if not 0 <= k < self._n:
            raise IndexError(k)
        return level_value(self._param, k)


def axis(param: AnyParam, count: int | None) -> Sequence[JSONScalar]:
    """The values a grid visits; ``count=None`` means every value (finite parameters only)."""
    match param:
        case Categorical():
            return param.choices
        case Fixed():
            return [param.value]
    if count is None:
        return Levels(param)
    return spaced_values(param, count)


@dataclass(frozen=True)
class GridPlan:
    """Sizes of every subtree of the condition forest, for one ``count``."""

    params: Mapping[str, AnyParam]
    axes: Mapping[str, Sequence[JSONScalar]]
    roots: tuple[str, ...]
    children: Mapping[str, tuple[str, ...]]

    @classmethod
    def build(cls, params: Mapping[str, AnyParam], count: int | None) -> GridPlan:
        children: dict[str, list[str]] = {name: [] for name in params}
        roots: list[str] = []
        for name, param in params.items():
            if param.condition is None:
                roots.append(name)
            else:
                children[param.condition.parent].append(name)
        return cls(
            params=params,
            axes={name: axis(param, count) for name, param in params.items()},
            roots=tuple(roots),
            children={name: tuple(kids) for name, kids in children.items()},
        )

    def _enabled(self, name: str, value: JSONScalar) -> list[str]:
        kids = self.children[name]
        return [kid for kid in kids if self._holds(kid, value)]

    def _holds(self, kid: str, value: JSONScalar) -> bool:
        condition = self.params[kid].condition
        return condition is not None and condition.holds(value)

    def _value_size(self, name: str, value: JSONScalar) -> int:
        size = 1
        for kid in self._enabled(name, value):
            size *= self.node_size(kid)
        return size

    def node_size(self, name: str) -> int:
        """How many distinct sub-configurations the subtree under ``name`` has."""
        values = self.axes[name]
        if not self.children[name]:
            return len(values)
        return sum(self._value_size(name, value) for value in values)

    def size(self) -> int:
        """The number of grid points."""
        total = 1
        for root in self.roots:
            total *= self.node_size(root)
        return total

    def point(self, index: int) -> Params:
        """Grid point ``index`` (0-based), keys in declaration order."""
        if not 0 <= index < self.size():
            raise IndexError(f"grid index {index} is out of range")
        found: Params = {}
        self._assign(self.roots, index, found)
        return {name: found[name] for name in self.params if name in found}

    def _assign(self, names: Sequence[str], index: int, found: Params) -> None:
        for name in reversed(names):  # the first name varies slowest
            size = self.node_size(name)
            self._assign_node(name, index % size, found)
            index //= size

    def _assign_node(self, name: str, index: int, found: Params) -> None:
        values = self.axes[name]
        if not self.children[name]:
            found[name] = values[index]
            return
        for value in values:
            size = self._value_size(name, value)
            if index < size:
                found[name] = value
                self._assign(self._enabled(name, value), index, found)
                return
            index -= size
        raise IndexError(index)
