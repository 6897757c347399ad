"""tuner: hyperparameter tuning as a service (successive halving, Hyperband, ASHA, PASHA).

The public names are listed in ``__all__``; ``tests/unit/test_public_api.py`` pins them.
"""

import importlib
from typing import TYPE_CHECKING, Any

from tuner.errors import (
    AuthError,
    ClientError,
    ConfigError,
    ConflictError,
    DuplicateReport,
    Forbidden,
    InvalidTransition,
    LeaseExpired,
    NotFound,
    OutOfRange,
    SpaceExhausted,
    StorageError,
    TunerError,
)

if TYPE_CHECKING:
    from tuner.client import Client
    from tuner.client.current import current_job
    from tuner.config import (
        BudgetConfig,
        ExperimentConfig,
        SchedulerConfig,
        json_schema,
        load_config,
        parse_config,
    )
    from tuner.samplers import SamplerConfig
    from tuner.space import Categorical, Condition, Fixed, Float, Int, SearchSpace

__version__ = "0.1.0"

#: Names loaded on first use: the SDK (httpx), the document model (pydantic, numpy) and the
#: space. ``import tuner`` (and so every ``tuner`` command, even ``--help``) stays light.
_LAZY = {
    "Client": "tuner.client",
    "current_job": "tuner.client.current",
    **dict.fromkeys(
        (
            "BudgetConfig",
            "ExperimentConfig",
            "SchedulerConfig",
            "json_schema",
            "load_config",
            "parse_config",
        ),
        "tuner.config",
    ),
    "SamplerConfig": "tuner.samplers",
    **dict.fromkeys(
        ("Categorical", "Condition", "Fixed", "Float", "Int", "SearchSpace"), "tuner.space"
    ),
}


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (see ``_LAZY``)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


__all__ = [
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
