"""tuner: hyperparameter tuning as a service (successive halving, Hyperband, ASHA, PASHA).

The public names are listed in ``__all__``; ``tests/unit/test_public_api.py`` pins them.
"""

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

__all__ = [
    "AuthError",
    "BudgetConfig",
    "Categorical",
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
    "json_schema",
    "load_config",
    "parse_config",
]
