"""Search spaces: parameter types, validation, sampling, grids and unit-cube encoding."""

from tuner.space.keys import Params, params_key
from tuner.space.params import Categorical, Condition, Fixed, Float, Int, Param
from tuner.space.search_space import SearchSpace

__all__ = [
    "Categorical",
    "Condition",
    "Fixed",
    "Float",
    "Int",
    "Param",
    "Params",
    "SearchSpace",
    "params_key",
]
