"""SearchSpace.grid, grid_size, grid_point and cardinality."""

from __future__ import annotations

from typing import Any

import pytest

from tuner.space import Categorical, Condition, Fixed, Float, Int, SearchSpace, params_key


def _keys(points: list[dict[str, Any]]) -> set[str]:
    return {params_key(p) for p in points}


@pytest.mark.parametrize(
    ("params", "count", "size"),
    [
        ({"c": Categorical(["a", "b"]), "n": Int(1, 3), "x": Float(0, 1)}, 4, 2 * 3 * 4),
        ({"c": Categorical(["a", "b"]), "n": Int(1, 3), "x": Float(0, 1)}, 2, 2 * 2 * 2),
        ({"n": Int(0, 100)}, 5, 5),
        ({"x": Float(0, 1, step=0.5)}, 5, 3),
        ({"x": Float(0, 1, step=0.1)}, 5, 5),
        ({"f": Fixed("on"), "x": Float(0, 1)}, 3, 3),
        (
            {
                "opt": Categorical(["sgd", "adam", "rms"]),
                "mom": Float(0, 1, condition=Condition("opt", ["sgd", "rms"])),
                "n": Int(1, 2),
            },
            3,
            (3 + 1 + 3) * 2,
        ),
    ],
    ids=[
        "cat-int-float",
        "count-2",
        "int-spaced",
        "float-steps",
        "float-steps-many",
        "fixed",
        "cond",
    ],
)
def test_space_grid_size_by_hand(params: dict[str, Any], count: int, size: int) -> None:
    space = SearchSpace(params)
    grid = space.grid(count)
    assert space.grid_size(count) == size
    assert len(grid) == size
    assert len(_keys(grid)) == size


def test_space_grid_values_are_exact_and_log_aware() -> None:
    space = SearchSpace({"lr": Float(1e-4, 1e-1, log=True), "n": Int(1, 1000, log=True)})
    assert [p["lr"] for p in space.grid(4)][::4] == [1e-4, 1e-3, 1e-2, 1e-1]
    assert sorted({p["n"] for p in space.grid(4)}) == [1, 10, 100, 1000]


def test_space_grid_order_is_deterministic_first_param_slowest() -> None:
    space = SearchSpace({"c": Categorical(["a", "b"]), "n": Int(1, 2)})
    assert space.grid() == [
        {"c": "a", "n": 1},
        {"c": "a", "n": 2},
        {"c": "b", "n": 1},
        {"c": "b", "n": 2},
    ]


def test_space_grid_conditional_expands_under_matching_values_only() -> None:
    space = SearchSpace(
        {
            "mom": Float(0, 1, condition=Condition("opt", ["sgd"])),  # declared before parent
            "opt": Categorical(["sgd", "adam"]),
        }
    )
    grid = space.grid(3)
    assert grid == [
        {"mom": 0.0, "opt": "sgd"},
        {"mom": 0.5, "opt": "sgd"},
        {"mom": 1.0, "opt": "sgd"},
        {"opt": "adam"},
    ]
    assert [space.grid_point(i, 3) for i in range(4)] == grid
    with pytest.raises(IndexError):
        space.grid_point(4, 3)


@pytest.mark.parametrize(
    ("params", "cardinality"),
    [
        ({"c": Categorical(["a", "b"]), "n": Int(0, 9)}, 20),
        ({"n": Int(0, 10**12)}, 10**12 + 1),
        ({"x": Float(0, 1, step=0.01), "f": Fixed(1)}, 101),
        ({"x": Float(0, 1)}, None),
        ({"c": Categorical(["a", "b"]), "x": Float(0, 1, condition=Condition("c", ["a"]))}, None),
    ],
    ids=["discrete", "huge-int", "stepped", "continuous", "conditional-continuous"],
)
def test_space_cardinality(params: dict[str, Any], cardinality: int | None) -> None:
    space = SearchSpace(params)
    assert space.cardinality() == cardinality
    assert space.is_finite() is (cardinality is not None)


def test_space_full_enumeration_by_index_covers_everything() -> None:
    space = SearchSpace(
        {
            "c": Categorical(["a", "b"]),
            "n": Int(0, 2, condition=Condition("c", ["a"])),
            "x": Float(0, 1, step=0.5),
        }
    )
    points = [space.grid_point(i, count=None) for i in range(space.cardinality() or 0)]
    assert len(_keys(points)) == (3 + 1) * 3
    for point in points:
        space.check(point)


def test_space_grid_rejects_small_count() -> None:
    with pytest.raises(ValueError, match="count is 1, but must be >= 2"):
        SearchSpace({"x": Float(0, 1)}).grid(1)
