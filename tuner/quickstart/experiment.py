"""The quickstart's experiment document (``examples/quickstart.yaml`` is the full budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

#: The training script run by the quickstart's workers.
TRAIN_SCRIPT = Path(__file__).with_name("train_digits.py")

Budget = Literal["small", "full"]

_BUDGETS: dict[str, dict[str, int]] = {
    # max_resource 27, eta 3: rungs at 1, 3, 9 and 27 epochs.
    "full": {"max_resource": 27, "max_trials": 40, "max_concurrent": 8},
    # For CI: rungs at 1, 3 and 9 epochs, a few trials (about 8 jobs).
    "small": {"max_resource": 9, "max_trials": 9, "max_concurrent": 4},  # 9 -> 3 -> 1 at R
}


def experiment_document(budget: Budget = "full", *, lease_ttl_s: float = 30.0) -> dict[str, Any]:
    """An ASHA search over a small MLP on the digits; epochs are the resource."""
    sizes = _BUDGETS[budget]
    return {
        "name": f"digits-mlp-{budget}",
        "description": "scikit-learn MLPClassifier on the digits; epochs are the resource",
        "metric": "accuracy",
        "mode": "max",
        "space": {
            "hidden": {"type": "categorical", "choices": [16, 32, 64, 128]},
            "alpha": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
            "learning_rate_init": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
        },
        "scheduler": {
            "type": "asha",
            "eta": 3,
            "min_resource": 1,
            "max_resource": sizes["max_resource"],
        },
        "sampler": {"type": "random"},
        "seed": 0,
        "budget": {"max_trials": sizes["max_trials"], "max_concurrent": sizes["max_concurrent"]},
        "lease_ttl_s": lease_ttl_s,
        "max_retries": 2,
    }
