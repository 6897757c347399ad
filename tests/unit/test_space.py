"""SearchSpace: validation messages, documents, sampling, conditions and keys."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from tuner.errors import ConfigError
from tuner.space import (
    Categorical,
    Condition,
    Fixed,
    Float,
    Int,
    SearchSpace,
    params_key,
)

DOCUMENT: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {
        "type": "float",
        "low": 0,
        "high": 0.99,
        "condition": {"parent": "optimizer", "values": ["sgd"]},
    },
}

FLOAT = {"type": "float", "low": 0.0, "high": 1.0}
CATS = {"type": "categorical", "choices": ["a", "b"]}

INVALID = [
    ({"lr": {"type": "float", "low": 0.1, "high": 0.1}}, "lr: low must be < high"),
    ({"n": {"type": "int", "low": 5, "high": 1}}, "n: low must be < high"),
    ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "lr: log scale needs low > 0"),
    ({"n": {"type": "int", "low": 0, "high": 8, "log": True}}, "n: log scale needs low > 0"),
    ({"optimizer": {"type": "categorical", "choices": []}}, "optimizer: choices must not be empty"),
    (
        {"optimizer": {"type": "categorical", "choices": ["sgd", "sgd"]}},
        "optimizer: choices must not contain duplicates: 'sgd'",
    ),
    ({"x": {**FLOAT, "step": 0}}, "x: step must be > 0"),
    ({"x": {**FLOAT, "step": -0.1}}, "x: step must be > 0"),
    ({"x": {**FLOAT, "step": 2.0}}, "x: step must be <= high - low"),
    ({"n": {"type": "int", "low": 0, "high": 3, "step": 4}}, "n: step must be <= high - low"),
    ({"n": {"type": "int", "low": 0.5, "high": 3}}, "n: int bounds must be integers"),
    ({"n": {"type": "int", "low": 0, "high": 3, "step": 1.5}}, "n: int step must be an integer"),
    ({"x": {"type": "float", "low": 0, "high": math.inf}}, "x: bounds must be finite"),
    ({"x": {"type": "float", "low": math.nan, "high": 1}}, "x: bounds must be finite"),
    ({}, "search space must not be empty"),
    ({"1st": FLOAT}, "'1st': name must match ^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"),
    ({"a b": FLOAT}, "'a b': name must match"),
    ({"x" * 65: FLOAT}, "name must match"),
    (
        {"m": {**FLOAT, "condition": {"parent": "opt", "values": ["a"]}}},
        "m: condition parent 'opt' is not a parameter",
    ),
    (
        {"x": FLOAT, "m": {**FLOAT, "condition": {"parent": "x", "values": [0.5]}}},
        "m: condition parent 'x' must be categorical or fixed",
    ),
    (
        {"opt": CATS, "m": {**FLOAT, "condition": {"parent": "opt", "values": ["c"]}}},
        "m: condition value 'c' is not a choice of 'opt'",
    ),
    (
        {
            "a": {**CATS, "condition": {"parent": "b", "values": ["a"]}},
            "b": {**CATS, "condition": {"parent": "a", "values": ["a"]}},
        },
        "a: conditions form a cycle: a -> b -> a",
    ),
    (
        {"a": {**CATS, "condition": {"parent": "a", "values": ["a"]}}},
        "a: conditions form a cycle: a -> a",
    ),
]


@pytest.mark.parametrize(("document", "message"), INVALID, ids=[message for _, message in INVALID])
def test_space_rejects_with_named_rule(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SearchSpace.model_validate(document)
    assert message in str(caught.value)
    with pytest.raises(ConfigError, match=None) as config_error:
        SearchSpace.validate_params(document)
    assert message in str(config_error.value)


def test_space_error_has_field_path() -> None:
    with pytest.raises(ValidationError) as caught:
        SearchSpace.model_validate({"ok": FLOAT, "lr": {"type": "float", "low": 1, "high": 0}})
    (error,) = caught.value.errors()
    assert error["loc"][0] == "lr"
    assert error["msg"] == "Value error, lr: low must be < high"


def test_space_reports_every_problem() -> None:
    document = {"a": {"type": "float", "low": 1, "high": 0}, "b": {**CATS, "choices": []}}
    with pytest.raises(ConfigError) as caught:
        SearchSpace.validate_params(document)
    assert "a: low must be < high" in str(caught.value)
    assert "b: choices must not be empty" in str(caught.value)


def test_param_models_validate_alone() -> None:
    with pytest.raises(ValidationError, match="low must be < high"):
        Float(low=1.0, high=0.0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        Float.model_validate({"low": 0, "high": 1, "bogus": 1})


def test_space_builds_from_python_and_document_alike() -> None:
    built = SearchSpace(
        {
            "lr": Float(low=1e-4, high=0.1, log=True),
            "optimizer": Categorical(["sgd", "adam"]),
            "momentum": Float(0, 0.99, condition=Condition("optimizer", ["sgd"])),
        }
    )
    assert built == SearchSpace.model_validate(DOCUMENT)


def test_space_json_round_trip_is_exact() -> None:
    space = SearchSpace.model_validate(DOCUMENT)
    dumped = space.model_dump(mode="json")
    again = SearchSpace.model_validate(dumped)
    assert again == space
    assert again.model_dump(mode="json") == dumped
    assert SearchSpace.model_validate_json(space.to_json()) == space
    assert json.loads(space.to_json()) == dumped
    assert list(dumped) == ["lr", "optimizer", "momentum"]


def test_space_yaml_round_trip() -> None:
    text = """
    batch: {type: int, low: 16, high: 256, log: true}
    act: {type: categorical, choices: [relu, tanh, null, true, 1, 1.5]}
    seed: {type: fixed, value: 7}
    """
    space = SearchSpace.model_validate(yaml.safe_load(text))
    reloaded = SearchSpace.model_validate(yaml.safe_load(yaml.safe_dump(space.model_dump())))
    assert reloaded == space
    assert space.root["act"] == Categorical(["relu", "tanh", None, True, 1, 1.5])


def test_space_categorical_keeps_bool_and_int_apart() -> None:
    space = SearchSpace({"c": Categorical([1, True, 1.0])})
    assert space.root["c"].model_dump()["choices"] == [1, True, 1.0]
    assert [type(v) for v in space.grid()[0].values()] == [int]
    assert {params_key(p) for p in space.grid()} == {
        params_key({"c": 1}),
        params_key({"c": True}),
        params_key({"c": 1.0}),
    }


def test_space_sample_is_seeded() -> None:
    space = SearchSpace.model_validate(DOCUMENT)
    first = [space.sample(np.random.default_rng(3)) for _ in range(2)]
    assert first[0] == first[1]


def test_space_conditional_present_only_when_condition_holds() -> None:
    space = SearchSpace.model_validate(DOCUMENT)
    rng = np.random.default_rng(0)
    samples = [space.sample(rng) for _ in range(200)]
    for params in samples:
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        assert list(params) == [n for n in ["lr", "optimizer", "momentum"] if n in params]
    assert 50 < sum("momentum" in p for p in samples) < 150


def test_space_nested_conditions_need_active_parent() -> None:
    space = SearchSpace(
        {
            "model": Categorical(["tree", "net"]),
            "act": Categorical(["relu", "tanh"], condition=Condition("model", ["net"])),
            "slope": Float(0, 1, condition=Condition("act", ["relu"])),
        }
    )
    assert space.active_names({"model": "tree", "act": "relu"}) == {"model"}
    assert space.active_names({"model": "net", "act": "relu"}) == {"model", "act", "slope"}


def test_space_log_sampling_is_log_uniform() -> None:
    space = SearchSpace({"lr": Float(1e-6, 1.0, log=True)})
    rng = np.random.default_rng(1)
    values = np.array([space.sample(rng)["lr"] for _ in range(6000)], dtype=float)
    assert values.min() >= 1e-6
    assert values.max() <= 1.0
    decades = np.floor(np.log10(values)).clip(-6, -1)
    counts = np.bincount((decades + 6).astype(int), minlength=6)
    assert counts.min() > 850  # 1000 expected per decade; linear sampling would give ~0


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        (Float(0.0, 1.0, step=0.25), {0.0, 0.25, 0.5, 0.75, 1.0}),
        (Float(0.0, 1.0, step=0.3), {0.0, 0.3, 0.6, 0.9}),
        (Int(0, 10, step=5), {0, 5, 10}),
        (Int(1, 3), {1, 2, 3}),
        (Int(-2, 2), {-2, -1, 0, 1, 2}),
        (Int(1, 4, log=True), {1, 2, 3, 4}),
        (Float(0.1, 0.4, log=True, step=0.1), {0.1, 0.2, 0.3, 0.4}),
    ],
    ids=[
        "float-step",
        "float-step-uneven",
        "int-step",
        "int",
        "int-negative",
        "int-log",
        "log-step",
    ],
)
def test_space_discrete_sampling_hits_every_level_only(param: Any, expected: set[Any]) -> None:
    space = SearchSpace({"x": param})
    rng = np.random.default_rng(2)
    seen = {space.sample(rng)["x"] for _ in range(400)}
    assert seen == expected
    assert space.cardinality() == len(expected)


def test_space_int_sampling_is_uniform_and_inclusive() -> None:
    space = SearchSpace({"n": Int(1, 3)})
    rng = np.random.default_rng(4)
    draws = [space.sample(rng)["n"] for _ in range(3000)]
    assert all(isinstance(value, int) for value in draws)
    counts = [draws.count(v) for v in (1, 2, 3)]
    assert min(counts) > 900


def test_space_check_accepts_points_and_rejects_others() -> None:
    space = SearchSpace.model_validate(DOCUMENT)
    space.check({"lr": 0.01, "optimizer": "sgd", "momentum": 0.9})
    space.check({"lr": 0.01, "optimizer": "adam"})
    bad = [
        ({"lr": 0.01, "optimizer": "adam", "momentum": 0.9}, "momentum: given"),
        ({"lr": 0.01, "optimizer": "sgd"}, "momentum: missing"),
        ({"lr": 2.0, "optimizer": "adam"}, "lr: 2.0 is not in the space"),
        ({"lr": 0.01, "optimizer": "rmsprop"}, "optimizer:"),
        ({"lr": 0.01, "optimizer": "adam", "extra": 1}, "extra: not a parameter"),
    ]
    for params, message in bad:
        with pytest.raises(ConfigError, match=message):
            space.check(params)


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ({"a": 0.1, "b": "x"}, {"b": "x", "a": 0.1}, True),
        ({"a": 0.1}, {"a": 0.1 + 0.0}, True),
        ({"a": np.float64(0.1)}, {"a": 0.1}, True),
        ({"a": -0.0}, {"a": 0.0}, True),
        ({"a": np.int64(3)}, {"a": 3}, True),
        ({"a": 0.1}, {"a": 0.1000000001}, False),
        ({"a": 1}, {"a": True}, False),
        ({"a": 1}, {"a": "1"}, False),
        ({"a": None}, {}, False),
        ({"a": 1}, {"b": 1}, False),
    ],
    ids=[
        "key-order",
        "same-float",
        "numpy-float",
        "negative-zero",
        "numpy-int",
        "different-float",
        "int-vs-bool",
        "int-vs-str",
        "none-vs-missing",
        "different-name",
    ],
)
def test_params_key_equality(left: dict[str, Any], right: dict[str, Any], equal: bool) -> None:
    assert (params_key(left) == params_key(right)) is equal
    assert len(params_key(left)) == 32
    int(params_key(left), 16)


def test_space_fixed_is_always_present() -> None:
    space = SearchSpace({"seed": Fixed(7), "x": Float(0, 1)})
    assert space.sample(np.random.default_rng(0))["seed"] == 7
    assert space.kinds == (1, None)
