"""A training script with no framework for the scheduler examples (asha.yaml, hyperband.yaml,
sha.yaml, asha-stopping.yaml, async_hyperband.yaml, pasha.yaml): their parameters (``lr``,
``width``, ``dropout``), their metric (``val_loss``, lower is better), epochs as the
resource, and a made-up learning curve in place of training. Checkpoints are small JSON
files, resumed when a trial is promoted or re-run.

    tuner submit examples/asha.yaml
    tuner worker --experiment 1 --slots 2 --exit-when-done -- python examples/curves.py

Without an agent it prints the curve of a default configuration.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import tuner

METRIC = "val_loss"  # the documents' metric: the server refuses a report of another one
DEFAULTS = {"lr": 0.01, "width": 128, "dropout": 0.2}
SECONDS_PER_EPOCH = 0.02


def val_loss(params: dict[str, float], epoch: int) -> float:
    """Best near lr=0.01, width=256, dropout=0.2; lower with every epoch, then flat."""
    gap = (
        abs(math.log10(params["lr"]) + 2.0)
        + 0.3 * abs(math.log2(params["width"] / 256))
        + abs(params["dropout"] - 0.2)
    )
    return round(0.1 + 0.5 * gap + 1.0 / math.sqrt(epoch), 6)


def main() -> int:
    job = tuner.current_job()
    if job is None:
        for epoch in (1, 3, 9, 27, 81):
            print(f"epoch {epoch}: {METRIC} {val_loss(DEFAULTS, epoch):.4f}")
        return 0
    params = {**DEFAULTS, **job.params}
    directory = Path(job.checkpoint_dir or ".")
    if job.checkpoint:  # resumed: the curve needs no state, but read it as a real script would
        resumed = json.loads(Path(job.checkpoint).read_text())["epoch"]
        print(f"resumed from epoch {resumed}", flush=True)
    saved = None
    for epoch in range(job.from_resource + 1, job.to_resource + 1):
        time.sleep(SECONDS_PER_EPOCH)  # "training"
        loss = val_loss(params, epoch)
        directory.mkdir(parents=True, exist_ok=True)
        saved = directory / f"epoch-{epoch:04d}.json"
        saved.write_text(json.dumps({"epoch": epoch, "params": params}))
        job.report(epoch, loss, checkpoint=str(saved), metric=METRIC)
        if job.should_stop:
            return 0
    job.complete(checkpoint=None if saved is None else str(saved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
