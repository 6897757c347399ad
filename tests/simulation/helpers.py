"""Experiment documents for the simulation tests."""

from __future__ import annotations

from typing import Any

from tuner.simulate import OBJECTIVES

CURVES_SPACE = OBJECTIVES["curves"].space()


def document(
    scheduler: dict[str, Any], max_trials: int | None = None, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "sim-test", "space": CURVES_SPACE, "scheduler": scheduler}
    if max_trials is not None:
        doc["budget"] = {"max_trials": max_trials}
    doc.update(extra)
    return doc
