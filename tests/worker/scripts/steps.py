"""A training script for agent tests: one step every STEP_S seconds, a checkpoint file every
CHECKPOINT_EVERY steps (default 1), and a JSON line per event in RUN_LOG (what it was given,
what it reported). NOISE=1 adds noise that differs between runs, as real training does;
REPORT_METRIC names the metric of its reports."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

from tuner.client import current_job


def log(**event: object) -> None:
    with open(os.environ["RUN_LOG"], "a") as f:
        f.write(json.dumps({"pid": os.getpid(), **event}) + "\n")


def main() -> int:
    job = current_job()
    if job is None:
        return 3
    step_s = float(os.environ.get("STEP_S", "0.05"))
    ignore_stop = os.environ.get("IGNORE_STOP") == "1"
    log(
        event="start",
        job_id=job.job_id,
        trial_id=job.trial_id,
        trial=job.trial_number,
        from_resource=job.from_resource,
        to_resource=job.to_resource,
        checkpoint=os.environ.get("TUNER_CHECKPOINT", ""),
        checkpoint_dir=os.environ.get("TUNER_CHECKPOINT_DIR", ""),
        cuda=os.environ.get("CUDA_VISIBLE_DEVICES"),
        metric=job.metric,
        mode=job.mode,
    )
    if job.checkpoint:
        resumed = int(Path(job.checkpoint).read_text())
        log(event="resumed", step=resumed)
    directory = Path(job.checkpoint_dir or ".")
    lr = float(job.params.get("lr", 0.01))
    every = int(os.environ.get("CHECKPOINT_EVERY", "1"))
    noise = random.Random().uniform(0, 1e-3) if os.environ.get("NOISE") == "1" else 0.0
    checkpoint: Path | None = None
    for step in range(job.from_resource + 1, job.to_resource + 1):
        time.sleep(step_s)
        saved = None
        if step % every == 0:
            checkpoint = directory / f"step-{step}.txt"
            checkpoint.write_text(str(step))
            saved = str(checkpoint)
        loss = abs(math.log10(lr) + 2.0) + 1.0 / step + noise
        decision = job.report(
            step, loss, checkpoint=saved, metric=os.environ.get("REPORT_METRIC") or None
        )
        log(event="report", step=step, job_id=job.job_id, value=loss, decision=str(decision.kind))
        print(f"step {step} loss {loss:.4f}", flush=True)  # noqa: T201 - the output under test
        if job.should_stop and not ignore_stop:
            return 0
    if ignore_stop:
        while True:
            time.sleep(0.1)
    if os.environ.get("NO_COMPLETE") != "1":
        job.complete(checkpoint=None if checkpoint is None else str(checkpoint))
    return int(os.environ.get("EXIT_CODE", "0"))


if __name__ == "__main__":
    sys.exit(main())
