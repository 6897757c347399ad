"""Deterministic random generators derived from an experiment seed and labels.

Every process derives the same generator for the same labels: the key is hashed with
``hashlib.blake2b`` (never ``hash()``, which Python salts per process).
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_hash(seed: int, *labels: object) -> int:
    """A 64-bit integer that depends only on ``seed`` and ``labels``."""
    key = "\x1f".join([str(seed), *(str(label) for label in labels)]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def derive_rng(seed: int, *labels: object) -> np.random.Generator:
    """A numpy generator seeded from ``seed`` and ``labels`` (e.g. ``"sample", 17``)."""
    return np.random.default_rng(stable_hash(seed, *labels))


def stable_uniform(seed: int, *labels: object) -> float:
    """A float in [0, 1) that depends only on ``seed`` and ``labels``."""
    return stable_hash(seed, *labels) / 2.0**64
