"""Unit-cube encoding of search spaces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.space import Categorical, Condition, Fixed, Float, Int, SearchSpace

SPACE = SearchSpace(
    {
        "lr": Float(1e-4, 1e-1, log=True),
        "opt": Categorical(["sgd", "adam", "rms"]),
        "mom": Float(0.0, 0.9, condition=Condition("opt", ["sgd"])),
        "n": Int(1, 4),
        "seed": Fixed(3),
    }
)


def test_space_dims_and_kinds() -> None:
    assert SPACE.dims == 5
    assert SPACE.kinds == (None, 3, None, None, 1)


def test_space_encode_centres_categories_and_nans_inactive() -> None:
    x = SPACE.encode({"lr": 1e-4, "opt": "adam", "n": 4, "seed": 3})
    assert x[0] == pytest.approx(0.0)
    assert x[1] == pytest.approx(1.5 / 3)
    assert math.isnan(x[2])
    assert x[3] == pytest.approx(3.5 / 4)
    assert x[4] == 0.5


def test_space_decode_clips_rounds_and_drops_inactive() -> None:
    params = SPACE.decode(np.array([1.5, 0.99, 0.2, -3.0, 0.1]))
    assert params == {"lr": 0.1, "opt": "rms", "n": 1, "seed": 3}
    assert SPACE.decode([0.5, 0.5, np.nan, 0.49, 0.5])["n"] == 2
    with pytest.raises(ValueError, match="mom: active"):
        SPACE.decode([0.5, 0.0, np.nan, 0.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        SPACE.decode([0.5])


def test_space_encode_rejects_values_outside() -> None:
    with pytest.raises(ValueError, match="opt:"):
        SPACE.encode({"lr": 0.01, "opt": "nadam", "n": 1, "seed": 3})
    with pytest.raises(ValueError, match="mom: missing"):
        SPACE.encode({"lr": 0.01, "opt": "sgd", "n": 1, "seed": 3})


def test_space_encode_decode_round_trip_on_grid() -> None:
    for params in SPACE.grid(4):
        decoded = SPACE.decode(SPACE.encode(params))
        assert decoded == pytest.approx(params, rel=1e-12)
        assert {k: type(v) for k, v in decoded.items()} == {k: type(v) for k, v in params.items()}
