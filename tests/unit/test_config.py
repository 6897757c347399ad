import json
from pathlib import Path

import pytest

import tuner
from tuner.config import json_schema, load_config, parse_config
from tuner.errors import ConfigError

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))


def test_public_api_is_pinned():
    assert sorted(tuner.__all__) == sorted(
        [
            "AuthError",
            "BudgetConfig",
            "Categorical",
            "Client",
            "ClientError",
            "Condition",
            "ConfigError",
            "ConflictError",
            "DuplicateReport",
            "ExperimentConfig",
            "Fixed",
            "Float",
            "Forbidden",
            "Int",
            "InvalidTransition",
            "LeaseExpired",
            "NotFound",
            "OutOfRange",
            "SamplerConfig",
            "SchedulerConfig",
            "SearchSpace",
            "SpaceExhausted",
            "StorageError",
            "TunerError",
            "__version__",
            "current_job",
            "json_schema",
            "load_config",
            "parse_config",
        ]
    )
    for name in tuner.__all__:
        assert hasattr(tuner, name), name


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_document_is_valid(path):
    config = load_config(path)
    assert config.name
    assert parse_config(json.loads(config.model_dump_json())) == config  # JSON round trip


def test_there_is_an_example_per_scheduler():
    kinds = {(c.scheduler.type, c.scheduler.form) for c in map(load_config, EXAMPLES)}
    for kind in ("sha", "hyperband", "asha", "async_hyperband", "pasha"):
        assert any(k == kind for k, _ in kinds), kind
    assert ("asha", "stopping") in kinds


def test_json_schema_describes_the_document():
    schema = json_schema()
    assert {"name", "space", "scheduler"} <= set(schema["required"])
    assert "budget" in schema["properties"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"scheduler": {"type": "asha", "max_resource": 9, "min_resource": 9}},
            "scheduler: Value error, min_resource is 9, but must be < max_resource (9)",
        ),
        ({"scheduler": {"type": "sha", "max_resource": 9}}, "sha needs n_configs"),
        (
            {"scheduler": {"type": "hyperband", "max_resource": 9, "form": "stopping"}},
            "form 'stopping' applies to asha and async_hyperband",
        ),
        (
            {"scheduler": {"type": "async_hyperband", "max_resource": 9, "brackets": [5]}},
            "brackets [5] are outside 0..2",
        ),
        ({"mode": "up"}, "mode: Input should be 'min' or 'max'"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        (
            {"space": {"lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
            "lr: log scale needs low > 0",
        ),
        (
            {"space": {"opt": {"type": "categorical", "choices": []}}},
            "opt: choices must not be empty",
        ),
    ],
    ids=[
        "r-equals-R",
        "sha-without-n",
        "stopping-hyperband",
        "bracket-range",
        "mode",
        "unknown-field",
        "log-low",
        "empty-choices",
    ],
)
def test_invalid_documents_are_refused_with_path_and_reason(patch, message):
    doc = {
        "name": "x",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "scheduler": {"type": "asha", "max_resource": 9},
    }
    doc.update(patch)
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert message.replace("Value error, ", "") in info.value.detail


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nscheduler: {type: asha}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: scheduler.max_resource: Field required"):
        load_config(path)
