"""Properties of sampling and the unit-cube encoding."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.space import Categorical, Condition, Fixed, Float, Int, SearchSpace


@st.composite
def spaces(draw: st.DrawFn) -> SearchSpace:
    params: dict[str, object] = {"parent": Categorical(["a", "b", "c"])}
    for i in range(draw(st.integers(1, 5))):
        low = draw(st.floats(1e-3, 100.0))
        width = draw(st.floats(1e-2, 1e3))
        log = draw(st.booleans())
        kind = draw(st.sampled_from(["float", "stepped", "int", "cat", "fixed"]))
        condition = draw(st.none() | st.just(Condition("parent", ["a"])))
        if kind == "float":
            params[f"p{i}"] = Float(low, low + width, log=log, condition=condition)
        elif kind == "stepped":
            step = width / draw(st.integers(1, 50))
            params[f"p{i}"] = Float(low, low + width, log=log, step=step, condition=condition)
        elif kind == "int":
            low_int = math.ceil(low)
            params[f"p{i}"] = Int(low_int, low_int + 1 + int(width), log=log, condition=condition)
        elif kind == "cat":
            params[f"p{i}"] = Categorical(["x", 1, 2.5, None, True], condition=condition)
        else:
            params[f"p{i}"] = Fixed("on", condition=condition)
    return SearchSpace.model_validate(params)


@settings(max_examples=150, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**32))
def test_space_decode_encode_round_trips_samples(space: SearchSpace, seed: int) -> None:
    params = space.sample(np.random.default_rng(seed))
    x = space.encode(params)
    assert x.shape == (space.dims,)
    finite = x[~np.isnan(x)]
    assert ((finite >= 0.0) & (finite <= 1.0)).all()
    decoded = space.decode(x)
    assert list(decoded) == list(params)
    for name, value in params.items():
        if isinstance(value, float) and not isinstance(decoded[name], bool):
            assert math.isclose(decoded[name], value, rel_tol=1e-9)  # type: ignore[arg-type]
        else:
            assert decoded[name] == value
            assert type(decoded[name]) is type(value)
    space.check(params)


@settings(max_examples=150, deadline=None)
@given(space=spaces(), point=st.lists(st.floats(-0.5, 1.5), min_size=6, max_size=6))
def test_space_decode_of_any_point_is_in_space(space: SearchSpace, point: list[float]) -> None:
    params = space.decode(np.array(point[: space.dims]))
    space.check(params)
