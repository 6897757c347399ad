"""The job loop with the SDK alone, no worker agent: this process claims jobs and trains them.

    TUNER_ADMIN_TOKEN=secret tuner server &
    TUNER_URL=http://127.0.0.1:8000 TUNER_TOKEN=secret python examples/sdk_loop.py

It submits a small ASHA experiment over a synthetic learning curve and trains every job it
gets until the experiment is over, then prints the best configuration. Run several copies
(with ``--experiment ID``) to see them share the work.
"""

from __future__ import annotations

import argparse
import math
import time

from tuner.client import Client

DOCUMENT = {
    "name": "sdk-loop",
    "metric": "loss",
    "mode": "min",
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    },
    "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 27},
    "budget": {"max_trials": 30},
    "lease_ttl_s": 30,
}


def loss_after(params: dict[str, float], epoch: int) -> float:
    """A made-up learning curve: best near lr=0.01, momentum=0.9; better with epochs."""
    gap = abs(math.log10(params["lr"]) + 2.0) + abs(params["momentum"] - 0.9)
    return gap + 1.0 / math.sqrt(epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", type=int, help="join this experiment instead")
    parser.add_argument("--sleep-s", type=float, default=0.01, help="time per epoch")
    args = parser.parse_args()

    with Client() as client:  # TUNER_URL and TUNER_TOKEN
        if args.experiment:
            experiment = client.experiment(args.experiment)
        else:
            experiment = client.submit(DOCUMENT)
            print(f"submitted experiment {experiment.id}")
        for job in experiment.jobs(wait_s=10):
            with job:  # fails the job (with the traceback) if training raises
                for epoch in range(job.from_resource + 1, job.to_resource + 1):
                    time.sleep(args.sleep_s)
                    decision = job.report(epoch, loss_after(job.params, epoch), metric="loss")
                    if job.should_stop:
                        break
                else:
                    decision = job.complete()
                print(
                    f"trial {job.trial_number} epochs {job.from_resource}->"
                    f"{job.to_resource}: {decision.kind}"
                )
        best = experiment.best_trial()  # ranked by the highest rung reached, then the value
        if best is not None and best.ranked_value is not None:
            print(
                f"best: trial {best.experiment_id}/{best.number} loss {best.ranked_value:.4f} "
                f"at epoch {best.ranked_step} params {best.params}"
            )


if __name__ == "__main__":
    main()
