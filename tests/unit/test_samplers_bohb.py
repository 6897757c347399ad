"""BOHB: fallback to random, concentration near the optimum, handling of failures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.samplers import BohbSampler, RandomSampler, Sampler
from tuner.samplers.bohb import split_good_bad
from tuner.samplers.history import ListHistory
from tuner.samplers.kde import ProductKde
from tuner.space import Categorical, Float, SearchSpace

LINE = SearchSpace({"x": Float(-5.0, 5.0)})


def _quadratic_history(n: int, seed: int = 0) -> ListHistory:
    history = ListHistory()
    rng = np.random.default_rng(seed)
    for _ in range(n):
        params = LINE.sample(rng)
        history.add(params)
        history.record(params, resource=9, loss=(float(params["x"]) - 1.0) ** 2)  # type: ignore[arg-type]
    return history


def _near_optimum_share(sampler: Sampler, history: ListHistory, n: int = 300) -> float:
    hits = 0
    for trial in range(n):
        params = sampler.sample(LINE, history, np.random.default_rng([7, trial]))
        hits += abs(float(params["x"]) - 1.0) < 0.5  # type: ignore[arg-type]
    return hits / n


def test_bohb_falls_back_to_random_with_too_few_results() -> None:
    history = _quadratic_history(2)  # d + 2 = 3 needed
    bohb = BohbSampler(random_fraction=1e-9)
    for trial in range(20):
        rng_bohb, rng_random = np.random.default_rng(trial), np.random.default_rng(trial)
        rng_random.random()  # BOHB spends one draw on the random-fraction coin
        assert bohb.sample(LINE, history, rng_bohb) == RandomSampler().sample(
            LINE, history, rng_random
        )


def test_bohb_concentrates_near_the_optimum() -> None:
    history = _quadratic_history(60)
    bohb = _near_optimum_share(BohbSampler(), history)
    random = _near_optimum_share(RandomSampler(), history)
    assert random < 0.2  # 0.1 expected: the window is a tenth of the range
    assert bohb > 0.5  # about 2/3 model-based proposals, nearly all in the window
    assert bohb > 3 * random


def test_bohb_uses_the_highest_level_with_enough_results() -> None:
    history = _quadratic_history(40)
    for i in range(40):  # a higher level that prefers x near -4
        params = {"x": -5.0 + i * 0.25}
        history.record(params, resource=27, loss=abs(params["x"] + 4.0))
    sampler = BohbSampler(random_fraction=1e-9)
    xs = [sampler.sample(LINE, history, np.random.default_rng(t))["x"] for t in range(50)]
    assert np.median(np.array(xs, dtype=float)) < -3.0


@pytest.mark.parametrize("bad", [math.inf, math.nan, -math.inf], ids=["inf", "nan", "-inf"])
def test_bohb_split_ranks_non_finite_losses_worst(bad: float) -> None:
    results = [({"x": float(i)}, bad if i < 3 else float(i)) for i in range(10)]
    good, worst = split_good_bad(results, dims=1, top_fraction=0.3)
    assert good == [{"x": 3.0}, {"x": 4.0}, {"x": 5.0}]
    assert worst[-3:] == [{"x": 0.0}, {"x": 1.0}, {"x": 2.0}]
    assert len(worst) == 7


def test_bohb_split_sizes_follow_the_paper() -> None:
    results = [({"x": float(i)}, float(i)) for i in range(100)]
    good, bad = split_good_bad(results, dims=4, top_fraction=0.15)
    assert len(good) == 15
    assert len(bad) == 85
    good, bad = split_good_bad(results[:6], dims=4, top_fraction=0.15)
    assert (len(good), len(bad)) == (5, 5)  # N_min = d + 1 for both; they overlap


def test_bohb_avoids_failed_region() -> None:
    history = ListHistory()
    rng = np.random.default_rng(3)
    for _ in range(60):
        params = LINE.sample(rng)
        x = float(params["x"])  # type: ignore[arg-type]
        loss = math.inf if x > 0 else abs(x + 2.5)
        history.add(params)
        history.record(params, resource=1, loss=loss)
    sampler = BohbSampler(random_fraction=1e-9)
    xs = [sampler.sample(LINE, history, np.random.default_rng(t))["x"] for t in range(100)]
    assert sum(float(x) > 0 for x in xs) < 10  # type: ignore[arg-type]


def test_bohb_handles_categorical_and_conditional_dims() -> None:
    space = SearchSpace.model_validate(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam", "rms"]},
            "mom": {
                "type": "float",
                "low": 0,
                "high": 1,
                "condition": {"parent": "opt", "values": ["sgd"]},
            },
            "lr": {"type": "float", "low": 1e-4, "high": 1, "log": True},
        }
    )
    history = ListHistory()
    rng = np.random.default_rng(0)
    for _ in range(80):
        params = space.sample(rng)
        history.add(params)
        history.record(params, resource=1, loss=0.0 if params["opt"] == "adam" else 1.0)
    sampler = BohbSampler(random_fraction=1e-9)
    picks = [sampler.sample(space, history, np.random.default_rng(t)) for t in range(60)]
    for params in picks:
        space.check(params)
    assert sum(p["opt"] == "adam" for p in picks) > 45


def test_kde_categorical_bandwidth_stays_valid() -> None:
    data = np.array([[0.25], [0.25], [0.25], [0.75]])
    kde = ProductKde.fit(data, (2,), min_bandwidth=1e-3)
    assert 1e-3 <= kde.bandwidths[0] <= 0.5
    density = np.exp(kde.log_density(np.array([[0.25], [0.75]])))
    assert density.sum() == pytest.approx(1.0)
    assert density[0] > density[1]


def test_bohb_space_with_categorical_only_is_still_deduplicated() -> None:
    space = SearchSpace({"c": Categorical(["a", "b", "c", "d"])})
    history = ListHistory()
    for i, choice in enumerate(["a", "b", "c"]):
        history.add({"c": choice})
        history.record({"c": choice}, resource=1, loss=float(i))
    proposed = BohbSampler(random_fraction=1e-9).sample(space, history, np.random.default_rng(0))
    assert proposed == {"c": "d"}
