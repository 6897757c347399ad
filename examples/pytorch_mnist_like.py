"""A PyTorch training script for the worker agent: a small MLP on an MNIST-like task
(scikit-learn's 8x8 digits, or synthetic data with ``--synthetic``), epochs as the resource,
checkpoints saved with ``torch.save`` and resumed when the trial is promoted or re-run.

    tuner submit examples/pytorch.yaml   # its document: accuracy (max) over these parameters
    tuner worker --gpus all --experiment 1 --exit-when-done -- python examples/pytorch_mnist_like.py

It uses the GPU the agent gave it (``CUDA_VISIBLE_DEVICES``) when there is one, else the
CPU. Without an agent it trains a default configuration for a few epochs. PyTorch is not a
dependency of tuner: it is imported only when this script runs.

Parameters it reads (all optional): ``lr`` (float), ``hidden`` (int), ``dropout`` (float),
``batch_size`` (int), ``weight_decay`` (float).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "hidden": 128,
    "dropout": 0.1,
    "batch_size": 64,
    "weight_decay": 0.0,
}


def load_data(synthetic: bool) -> tuple[Any, Any, Any, Any]:
    """(x_train, y_train, x_val, y_val) as float32/int64 numpy arrays."""
    import numpy as np

    if synthetic:
        rng = np.random.default_rng(0)
        centers = rng.normal(size=(10, 64)).astype("float32")
        y = rng.integers(0, 10, size=3000)
        x = (centers[y] + rng.normal(scale=1.5, size=(3000, 64))).astype("float32")
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = (digits.data / 16.0).astype("float32"), digits.target
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order], y[order].astype("int64")
    cut = int(0.8 * len(x))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def train(
    params: dict[str, Any],
    start: int,
    stop: int,
    checkpoint: str | None,
    checkpoint_dir: Path,
    synthetic: bool,
    job: Any = None,
) -> float:
    import torch
    from torch import nn

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(int(params.get("seed", 0)))
    x_train, y_train, x_val, y_val = (torch.from_numpy(a) for a in load_data(synthetic))
    x_val, y_val = x_val.to(device), y_val.to(device)
    model = nn.Sequential(
        nn.Linear(x_train.shape[1], int(params["hidden"])),
        nn.ReLU(),
        nn.Dropout(float(params["dropout"])),
        nn.Linear(int(params["hidden"]), 10),
    ).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"])
    )
    if checkpoint:
        state = torch.load(checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        print(f"resumed from {checkpoint} (epoch {state['epoch']})", flush=True)
    loss_fn = nn.CrossEntropyLoss()
    batch = int(params["batch_size"])
    accuracy, saved = 0.0, None
    for epoch in range(start + 1, stop + 1):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx].to(device)), y_train[idx].to(device))
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val).argmax(1) == y_val).float().mean().item()
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        saved = str(checkpoint_dir / f"epoch-{epoch:04d}.pt")
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
            saved,
        )
        print(f"epoch {epoch}: val accuracy {accuracy:.4f} on {device}", flush=True)
        if job is not None:
            job.report(
                epoch, accuracy, checkpoint=saved, metric="accuracy", train_loss=float(loss.item())
            )
            if job.should_stop:
                return accuracy
    if job is not None:
        job.complete(checkpoint=saved)
    return accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description="PyTorch example for tuner workers")
    parser.add_argument("--synthetic", action="store_true", help="synthetic data, no sklearn")
    parser.add_argument("--epochs", type=int, default=5, help="epochs without an agent")
    args = parser.parse_args()
    if importlib.util.find_spec("torch") is None:
        # One line the worker agent shows with the failure, instead of a traceback per job.
        print("this example needs PyTorch: pip install torch (not a dependency of tuner)",
              file=sys.stderr)
        return 2

    from tuner.client import current_job

    job = current_job()
    if job is None:
        train(DEFAULTS, 0, args.epochs, None, Path("checkpoints-pytorch"), args.synthetic)
        return 0
    params = {**DEFAULTS, **job.params, "seed": job.trial_number}
    directory = Path(job.checkpoint_dir or os.environ.get("TUNER_CHECKPOINT_DIR", "."))
    train(
        params, job.from_resource, job.to_resource, job.checkpoint, directory, args.synthetic, job
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
