"""Synthetic objectives for the simulator: learning curves and multi-fidelity test functions.

Every objective is *minimised* and is evaluated at a fidelity ``z = r / R`` in ``(0, 1]``
(``r`` = the resource trained so far, ``R`` = the scheduler's ``max_resource``). Each one
declares the search space it expects (:attr:`Objective.params`, :meth:`Objective.space`),
which the example documents use. A document whose space names other parameters still
simulates: its configuration is encoded to the unit cube and dimension ``i`` drives the
objective's parameter ``i`` (cycling when the space has fewer dimensions); see
:class:`BoundObjective`.

Built-in objectives (:data:`OBJECTIVES`):

- ``curves``: power-law learning curves ``value(z) = final + a * e(z) ** -b`` over virtual
  epochs ``e(z) = 1 + 99 z``, where ``final``, ``a`` and ``b`` depend on the configuration.
  A high learning rate learns fast (large ``b``) but ends worse; a wide network starts slowly
  (large ``a``, smaller ``b``) but ends better. Curves therefore cross: early rankings
  correlate with final ones, imperfectly, which is the regime successive halving targets.
- ``branin``: MF-Branin of Kandasamy et al., "Multi-fidelity Bayesian Optimisation with
  Continuous Approximations" (ICML 2017, the BOCA paper), with the three fidelity
  coordinates all equal to ``z``.
- ``hartmann6``: MF-Hartmann-6 of the same paper (and its reference code), with every
  fidelity coordinate equal to ``z``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.errors import ConfigError
from tuner.space import SearchSpace

Curve = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class ParamRange:
    """One parameter an objective reads: its name, bounds and scale."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def from_unit(self, u: float) -> float:
        """The value at ``u`` in ``[0, 1]`` (log-aware)."""
        u = min(max(u, 0.0), 1.0)
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def document(self) -> dict[str, Any]:
        """This parameter as an experiment-document entry."""
        kind = "int" if self.integer else "float"
        low: float | int = int(self.low) if self.integer else self.low
        high: float | int = int(self.high) if self.integer else self.high
        entry: dict[str, Any] = {"type": kind, "low": low, "high": high}
        if self.log:
            entry["log"] = True
        return entry


@dataclass(frozen=True)
class Objective:
    """A minimised objective ``f(x, z)`` with the parameters it reads and its known optimum.

    ``curve(x)`` returns the learning curve of configuration ``x`` (a function of ``z``);
    work that depends only on ``x`` is done once per trial there.
    """

    name: str
    params: tuple[ParamRange, ...]
    curve: Callable[[Mapping[str, float]], Curve]
    optimum: float | None = None
    description: str = ""

    def space(self) -> dict[str, Any]:
        """The search space this objective expects, in document form."""
        return {p.name: p.document() for p in self.params}

    def value(self, x: Mapping[str, float], z: float) -> float:
        """``f(x, z)``: one evaluation (tests and one-off use)."""
        return self.curve(x)(z)


# ---- learning curves --------------------------------------------------------------------

_CURVE_PARAMS = (
    ParamRange("lr", 1e-4, 1.0, log=True),
    ParamRange("width", 16, 1024, log=True, integer=True),
    ParamRange("dropout", 0.0, 0.7),
)


def _unit(p: ParamRange, value: float) -> float:
    if p.log:
        return (math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
    return (value - p.low) / (p.high - p.low)


def _curves(x: Mapping[str, float]) -> Curve:
    u_lr = _unit(_CURVE_PARAMS[0], x["lr"])
    u_w = _unit(_CURVE_PARAMS[1], x["width"])
    d = _unit(_CURVE_PARAMS[2], x["dropout"])
    final = (
        0.08
        + 0.5 * (u_lr - 0.6) ** 2
        + 0.12 * (1.0 - u_w)
        + 0.1 * (d - 0.35) ** 2
        + 0.02 * math.sin(9.0 * u_lr + 5.0 * u_w + 3.0 * d)
    )
    a = 0.6 + 0.6 * u_w  # wide networks start from further away
    b = (0.2 + 1.1 * u_lr - 0.3 * u_w * u_lr) * (1.0 - 0.3 * d)  # high lr learns fast

    def curve(z: float) -> float:
        gap: float = a * (1.0 + 99.0 * z) ** -b
        return final + gap

    return curve


# ---- MF-Branin (Kandasamy et al. 2017, BOCA) ---------------------------------------------

_BRANIN_PARAMS = (ParamRange("x1", -5.0, 10.0), ParamRange("x2", 0.0, 15.0))


def mf_branin(x1: float, x2: float, z: float) -> float:
    """MF-Branin: ``a (x2 - b(z) x1^2 + c(z) x1 - r)^2 + s (1 - t(z)) cos(x1) + s`` with
    ``a = 1, r = 6, s = 10``, ``b(z) = 5.1 / (4 pi^2) - 0.01 (1 - z)``,
    ``c(z) = 5 / pi - 0.1 (1 - z)``, ``t(z) = 1 / (8 pi) + 0.05 (1 - z)``. At ``z = 1`` it is
    Branin: minimum 0.397887 at (-pi, 12.275), (pi, 2.275) and (9.42478, 2.475)."""
    b = 5.1 / (4.0 * math.pi**2) - 0.01 * (1.0 - z)
    c = 5.0 / math.pi - 0.1 * (1.0 - z)
    t = 1.0 / (8.0 * math.pi) + 0.05 * (1.0 - z)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * math.cos(x1) + 10.0


def _branin(x: Mapping[str, float]) -> Curve:
    x1, x2 = float(x["x1"]), float(x["x2"])
    return lambda z: mf_branin(x1, x2, z)


# ---- MF-Hartmann-6 (Kandasamy et al. 2017, BOCA) -----------------------------------------

_HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HARTMANN_A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
_HARTMANN_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_HARTMANN_PARAMS = tuple(ParamRange(f"x{i}", 0.0, 1.0) for i in range(1, 7))


def mf_hartmann6(x: Any, z: float) -> float:
    """MF-Hartmann-6: ``-sum_i (alpha_i - 0.1 (1 - z)) exp(-sum_j A_ij (x_j - P_ij)^2)``.

    At ``z = 1`` it is Hartmann-6: minimum -3.32237 at
    (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).
    """
    inner = np.exp(-np.sum(_HARTMANN_A * (np.asarray(x, dtype=float) - _HARTMANN_P) ** 2, axis=1))
    return float(-np.dot(_HARTMANN_ALPHA - 0.1 * (1.0 - z), inner))


def _hartmann(x: Mapping[str, float]) -> Curve:
    inner = np.exp(
        -np.sum(
            _HARTMANN_A
            * (np.array([float(x[p.name]) for p in _HARTMANN_PARAMS]) - _HARTMANN_P) ** 2,
            axis=1,
        )
    )
    base, shift = float(-np.dot(_HARTMANN_ALPHA, inner)), float(np.sum(inner))
    return lambda z: base + 0.1 * (1.0 - z) * shift  # linear in z: computed once per trial


OBJECTIVES: dict[str, Objective] = {
    "curves": Objective(
        "curves",
        _CURVE_PARAMS,
        _curves,
        None,
        "crossing power-law learning curves (fast starters are not always best)",
    ),
    "branin": Objective(
        "branin", _BRANIN_PARAMS, _branin, 0.397887, "MF-Branin (Kandasamy et al. 2017)"
    ),
    "hartmann6": Objective(
        "hartmann6",
        _HARTMANN_PARAMS,
        _hartmann,
        -3.32237,
        "MF-Hartmann-6 (Kandasamy et al. 2017)",
    ),
}


def get_objective(name: str) -> Objective:
    """The built-in objective ``name``; raises ConfigError naming the choices."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        choices = ", ".join(sorted(OBJECTIVES))
        raise ConfigError(
            f"objective: unknown objective {name!r}; choose one of {choices}"
        ) from None


class BoundObjective:
    """An objective read through one experiment's search space.

    If the space has every parameter the objective reads, they are read by name. Otherwise
    the configuration is encoded to the unit cube (inactive dimensions at 0.5) and dimension
    ``i % dims`` drives the objective's ``i``-th parameter over its own range.
    """

    def __init__(self, objective: Objective, space: SearchSpace) -> None:
        self.objective = objective
        self._space = space
        names = set(space.names)
        self.by_name = all(p.name in names for p in objective.params)
        if not self.by_name and space.dims == 0:
            raise ConfigError("space: the simulator needs at least one parameter")

    def curve(self, params: Mapping[str, Any]) -> Curve:
        """The learning curve of one configuration."""
        if self.by_name:
            return self.objective.curve(
                {p.name: float(params[p.name]) for p in self.objective.params}
            )
        u = self._space.encode(params)
        u = np.where(np.isnan(u), 0.5, u)
        dims = len(u)
        x = {p.name: p.from_unit(float(u[i % dims])) for i, p in enumerate(self.objective.params)}
        return self.objective.curve(x)
