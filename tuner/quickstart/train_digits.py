"""Train a small neural network on scikit-learn's digits, one epoch per resource unit.

Run by a worker agent (``tuner worker -- python -m tuner.quickstart.train_digits``), it
trains the job's configuration from ``from_resource`` to ``to_resource`` epochs, resuming
from the checkpoint of a previous job of the trial when there is one, reports the
validation accuracy after each epoch with a checkpoint (a pickled estimator), and stops
early when the scheduler says so. Run by hand, it trains a default configuration.

The digits ship with scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

DEFAULT_PARAMS: dict[str, Any] = {
    "hidden": 64,
    "alpha": 1e-4,
    "learning_rate_init": 1e-3,
    "batch_size": 32,
}


def say(text: str) -> None:
    """One line of output (the agent keeps the tail for the dashboard)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def load_data() -> tuple[Any, Any, Any, Any]:
    """The digits, scaled to [0, 1], split 75/25 with a fixed seed (the same in every job)."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    x, y = load_digits(return_X_y=True)
    split: list[Any] = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    return split[0], split[1], split[2], split[3]


def new_model(params: dict[str, Any], seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]

    return MLPClassifier(
        hidden_layer_sizes=(int(params["hidden"]),),
        alpha=float(params["alpha"]),
        learning_rate_init=float(params["learning_rate_init"]),
        batch_size=int(params["batch_size"]),
        random_state=seed,
    )


def save_checkpoint(model: Any, directory: Path, epoch: int) -> str:
    """Write the estimator atomically; answer its path (the checkpoint reference)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch-{epoch:04d}.pkl"
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(model, f)
    os.replace(tmp, path)
    return str(path)


def load_checkpoint(reference: str) -> Any:
    with open(reference, "rb") as f:
        return pickle.load(f)  # noqa: S301 - our own checkpoint


def train_job() -> int:
    import numpy as np

    from tuner.client import current_job

    job = current_job()
    if job is None:
        return train_alone()
    x_train, x_val, y_train, y_val = load_data()
    params = {**DEFAULT_PARAMS, **job.params}
    if job.checkpoint:
        model = load_checkpoint(job.checkpoint)
        say(f"trial {job.experiment_id}/{job.trial_number}: resuming from {job.checkpoint}")
    else:
        model = new_model(params, seed=job.trial_number)
    directory = Path(job.checkpoint_dir or ".")
    classes = np.arange(10)
    previous: str | None = None
    for epoch in range(job.from_resource + 1, job.to_resource + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(x_train, y_train, classes=classes)
        accuracy = float(model.score(x_val, y_val))
        checkpoint = save_checkpoint(model, directory, epoch)
        decision = job.report(epoch, accuracy, checkpoint=checkpoint, loss=float(model.loss_))
        say(
            f"trial {job.experiment_id}/{job.trial_number} epoch {epoch}: "
            f"accuracy {accuracy:.4f} -> {decision.kind}"
        )
        if previous is not None and previous != job.checkpoint:
            Path(previous).unlink(missing_ok=True)
        previous = checkpoint
        if job.should_stop:
            return 0
    job.complete(checkpoint=previous)
    return 0


def train_alone(epochs: int = 10) -> int:
    """Without a worker agent: train the default configuration and print its accuracy."""
    import numpy as np

    x_train, x_val, y_train, y_val = load_data()
    model = new_model(DEFAULT_PARAMS, seed=0)
    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(x_train, y_train, classes=np.arange(10))
        say(f"epoch {epoch}: accuracy {model.score(x_val, y_val):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(train_job())
