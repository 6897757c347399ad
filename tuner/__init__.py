"""tuner: hyperparameter tuning as a service (successive halving, Hyperband, ASHA, PASHA).

The public names are listed in ``__all__``; ``tests/unit/test_public_api.py`` pins them.
"""

import importlib
from typing import Any

from tuner.config import (
    BudgetConfig,
    ExperimentConfig,
    SchedulerConfig,
    json_schema,
    load_config,
    parse_config,
)
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
from tuner.samplers import SamplerConfig
from tuner.space import Categorical, Condition, Fixed, Float, Int, SearchSpace

__version__ = "0.1.0"

_SDK = {"Client": "tuner.client", "current_job": "tuner.client.current"}


def __getattr__(name: str) -> Any:
    """The SDK (httpx) loads on first use, so ``import tuner`` stays light for the core."""
    if name in _SDK:
        return getattr(importlib.import_module(_SDK[name]), name)
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
