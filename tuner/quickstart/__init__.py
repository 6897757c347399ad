"""``tuner quickstart``: a server, local worker agents and a small experiment, on this
machine, with nothing to download (scikit-learn's digits)."""

from tuner.quickstart.experiment import TRAIN_SCRIPT, experiment_document

__all__ = ["TRAIN_SCRIPT", "experiment_document"]
