"""Random, grid and quasi-random samplers, the registry and the config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from tuner.errors import SpaceExhausted
from tuner.samplers import (
    BohbSampler,
    GridSampler,
    QuasiRandomSampler,
    RandomSampler,
    Sampler,
    SamplerConfig,
    build_sampler,
)
from tuner.samplers.history import ListHistory
from tuner.space import Categorical, Condition, Float, Int, SearchSpace, params_key

SIX = SearchSpace({"c": Categorical(["a", "b"]), "n": Int(1, 3)})
MIXED = SearchSpace(
    {
        "lr": Float(1e-4, 1e-1, log=True),
        "opt": Categorical(["sgd", "adam"]),
        "mom": Float(0, 0.99, condition=Condition("opt", ["sgd"])),
        "n": Int(1, 8),
    }
)

SAMPLERS: list[Sampler] = [
    RandomSampler(),
    GridSampler(count=3),
    QuasiRandomSampler("sobol"),
    QuasiRandomSampler("halton"),
    BohbSampler(),
]
SAMPLER_IDS = ["random", "grid", "sobol", "halton", "bohb"]


def _run(sampler: Sampler, space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    history = ListHistory()
    for trial in range(n):
        params = sampler.sample(space, history, np.random.default_rng([seed, trial]))
        history.add(params)
    return history.proposed


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_sampler_same_seed_same_sequence(sampler: Sampler) -> None:
    assert _run(sampler, MIXED, 20, seed=5) == _run(sampler, MIXED, 20, seed=5)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_sampler_proposes_points_of_the_space(sampler: Sampler) -> None:
    for params in _run(sampler, MIXED, 30):
        MIXED.check(params)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=SAMPLER_IDS)
def test_sampler_exhausts_finite_space_without_repeats(sampler: Sampler) -> None:
    history = ListHistory()
    for trial in range(6):
        history.add(sampler.sample(SIX, history, np.random.default_rng(trial)))
    assert len({params_key(p) for p in history.proposed}) == 6
    with pytest.raises(SpaceExhausted):
        sampler.sample(SIX, history, np.random.default_rng(99))


def test_random_sampler_differs_across_seeds() -> None:
    assert _run(RandomSampler(), MIXED, 5, seed=1) != _run(RandomSampler(), MIXED, 5, seed=2)


def test_random_sampler_falls_back_to_enumeration_when_draws_collide() -> None:
    space = SearchSpace({"n": Int(0, 999)})
    history = ListHistory([{"n": n} for n in range(1000) if n != 437])
    assert RandomSampler(max_draws=1).sample(space, history, np.random.default_rng(0)) == {"n": 437}


def test_grid_sampler_enumerates_every_point_once_in_order() -> None:
    space = SearchSpace({"c": Categorical(["a", "b"]), "n": Int(1, 3), "x": Float(0.0, 1.0)})
    proposed = _run(GridSampler(count=4), space, space.grid_size(4))
    assert proposed == space.grid(4)
    assert len(proposed) == 2 * 3 * 4


def test_grid_sampler_skips_seen_points() -> None:
    history = ListHistory([{"c": "a", "n": 1}, {"c": "a", "n": 3}])
    first = GridSampler().sample(SIX, history, np.random.default_rng(0))
    assert first == {"c": "a", "n": 3} or first == {"c": "b", "n": 1}
    assert params_key(first) not in {params_key(p) for p in history.proposed}


def test_quasi_sampler_points_are_distinct_and_cover() -> None:
    space = SearchSpace({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    for method in ("sobol", "halton"):
        points = np.array([[p["x"], p["y"]] for p in _run(QuasiRandomSampler(method), space, 64)])
        assert len({tuple(row) for row in points}) == 64
        cells = {(int(x * 4), int(y * 4)) for x, y in points}
        assert len(cells) == 16, method  # every cell of a 4x4 grid gets a point


def test_quasi_sampler_is_more_even_than_random() -> None:
    space = SearchSpace({"x": Float(0.0, 1.0)})
    quasi = sorted(p["x"] for p in _run(QuasiRandomSampler(), space, 32))
    rand = sorted(p["x"] for p in _run(RandomSampler(), space, 32))
    assert max(np.diff(quasi)) < max(np.diff(rand))


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (SamplerConfig(), RandomSampler),
        (SamplerConfig(type="grid", grid_count=7), GridSampler),
        (SamplerConfig(type="quasi", quasi_method="halton"), QuasiRandomSampler),
        (SamplerConfig(type="bohb", n_candidates=8), BohbSampler),
    ],
    ids=["random", "grid", "quasi", "bohb"],
)
def test_build_sampler_builds_the_named_sampler(config: SamplerConfig, kind: type) -> None:
    sampler = build_sampler(config)
    assert isinstance(sampler, kind)
    assert config == SamplerConfig.model_validate(config.model_dump(mode="json"))


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "tpe"},
        {"grid_count": 1},
        {"top_fraction": 0.0},
        {"top_fraction": 1.0},
        {"random_fraction": 1.5},
        {"bandwidth_factor": 0},
        {"n_candidates": 0},
        {"min_bandwidth": -1e-3},
        {"quasi_method": "lhs"},
        {"bogus": 1},
    ],
    ids=lambda fields: next(iter(fields)),
)
def test_sampler_config_rejects_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SamplerConfig.model_validate(fields)
