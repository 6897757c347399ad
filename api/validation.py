"""Checks on free-form JSON bodies that pydantic models cannot express (the experiment
document is validated by ``tuner.config``, but must never carry a bare NaN or Infinity,
which Python's JSON parser accepts, nor a NUL character, which PostgreSQL cannot store)."""

from __future__ import annotations

import math
from typing import Any

from tuner.errors import ConfigError
from tuner.wire import nul_path


class InvalidRequest(ConfigError):
    """A request body that is well-formed JSON but not acceptable (422)."""

    code = "invalid_request"


def reject_unstorable(data: Any, root: str = "body") -> None:
    """Raise :class:`InvalidRequest` naming the path of the first NaN or infinity, or of
    the first text holding a NUL character (:func:`tuner.wire.nul_path`)."""
    where = nul_path(data, root)
    if where is not None:
        raise InvalidRequest(
            f"{where}: contains a NUL character (\\u0000), which cannot be stored; remove it"
        )
    stack: list[tuple[str, Any]] = [(root, data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(f"{path}: Input should be a finite number")
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}", item) for i, item in enumerate(value))
