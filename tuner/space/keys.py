"""Canonical keys for configurations: the same point of a space always gets the same key."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

import numpy as np

JSONScalar = str | int | float | bool | None
Params = dict[str, JSONScalar]


def normalise_scalar(value: object) -> JSONScalar:
    """A plain Python scalar for ``value`` (numpy scalars unwrapped, ``-0.0`` made ``0.0``).

    Floats keep their type (``1.0`` and ``1`` stay different values); non-finite floats become
    the strings ``"nan"``, ``"inf"`` and ``"-inf"`` so that keys are valid JSON.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        return value + 0.0  # turns -0.0 into 0.0
    raise TypeError(f"{value!r} is not a JSON scalar")


def scalar_key(value: object) -> str:
    """The canonical JSON text of one value; equal keys mean the same choice."""
    return json.dumps(normalise_scalar(value))


def params_key(params: Mapping[str, object]) -> str:
    """A 32-hex-digit key that is equal for equal configurations, in any key order.

    The configuration is written as JSON with sorted keys (floats in ``repr`` form, so
    ``0.1`` is always ``0.1``) and hashed with BLAKE2b, never ``hash()``.
    """
    canonical = {name: normalise_scalar(value) for name, value in params.items()}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
