"""The synthetic objectives: known optima at full fidelity, crossing learning curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.errors import ConfigError
from tuner.simulate import OBJECTIVES, BoundObjective, get_objective
from tuner.simulate.objectives import mf_branin, mf_hartmann6
from tuner.space import SearchSpace

HARTMANN_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)


@pytest.mark.parametrize(
    "x", [(-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475)], ids=["left", "middle", "right"]
)
def test_mf_branin_at_full_fidelity_has_the_branin_minimum(x: tuple[float, float]) -> None:
    assert mf_branin(*x, z=1.0) == pytest.approx(0.397887, abs=1e-6)
    assert OBJECTIVES["branin"].value({"x1": x[0], "x2": x[1]}, 1.0) == pytest.approx(
        0.397887, abs=1e-6
    )


def test_mf_branin_low_fidelity_is_biased() -> None:
    assert abs(mf_branin(-math.pi, 12.275, 0.1) - 0.397887) > 0.1


def test_mf_hartmann6_at_full_fidelity_has_the_hartmann_minimum() -> None:
    x = dict(zip([f"x{i}" for i in range(1, 7)], HARTMANN_ARGMIN, strict=True))

    assert mf_hartmann6(HARTMANN_ARGMIN, 1.0) == pytest.approx(-3.32237, abs=1e-5)
    assert OBJECTIVES["hartmann6"].value(x, 1.0) == pytest.approx(-3.32237, abs=1e-5)
    assert OBJECTIVES["hartmann6"].value(x, 0.2) == pytest.approx(
        mf_hartmann6(HARTMANN_ARGMIN, 0.2)
    )
    assert OBJECTIVES["hartmann6"].value(x, 0.2) > -3.32237 + 0.05


def test_mf_hartmann6_full_fidelity_is_a_lower_bound_over_random_points() -> None:
    rng = np.random.default_rng(0)
    assert min(mf_hartmann6(rng.random(6), 1.0) for _ in range(2000)) > -3.32237 - 1e-9


def _ranks(values: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(values))


def test_curves_early_ranking_correlates_with_final_ranking_imperfectly() -> None:
    objective = OBJECTIVES["curves"]
    space = SearchSpace.model_validate(objective.space())
    rng = np.random.default_rng(0)
    configs = [space.sample(rng) for _ in range(300)]
    curves = [objective.curve({k: float(str(v)) for k, v in c.items()}) for c in configs]
    early = [curve(1 / 81) for curve in curves]
    final = [curve(1.0) for curve in curves]

    rho = float(np.corrcoef(_ranks(early), _ranks(final))[0, 1])
    assert 0.2 < rho < 0.95
    best_early, best_final = int(np.argmin(early)), int(np.argmin(final))
    assert best_early != best_final  # the fastest starter is not the best


def test_curves_are_decreasing_in_resource() -> None:
    curve = OBJECTIVES["curves"].curve({"lr": 0.01, "width": 128, "dropout": 0.2})
    values = [curve(r / 81) for r in range(1, 82)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_bound_objective_maps_a_foreign_space_through_the_unit_cube() -> None:
    space = SearchSpace.model_validate({"a": {"type": "float", "low": 0, "high": 1}})
    bound = BoundObjective(get_objective("branin"), space)

    value = bound.curve({"a": 0.5})(1.0)

    assert not bound.by_name
    assert value == pytest.approx(mf_branin(2.5, 7.5, 1.0))


def test_get_objective_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="branin"):
        get_objective("rosenbrock")
