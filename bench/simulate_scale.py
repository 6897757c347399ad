"""How the scheduler core scales: ASHA on 1,000 virtual workers, 1k / 10k / 100k trials.

Each run is ``tuner.simulate.simulate`` with reports only at job ends, so every job costs the
coordinator one ``claim`` and one ``complete``: a *decision* below is that pair (the time per
decision is the run's whole time, simulator included, divided by its jobs). CPU seconds are
printed beside wall seconds because a shared machine's load inflates wall time. The time per
decision should grow no faster than a log factor with the number of trials.

    .venv/bin/python bench/simulate_scale.py            # 1k, 10k, 100k
    .venv/bin/python bench/simulate_scale.py --sizes 1000 10000 --profile 10000
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import time

from tuner.simulate import OBJECTIVES, simulate


def document(n_trials: int) -> dict[str, object]:
    return {
        "name": f"scale-{n_trials}",
        "space": OBJECTIVES["curves"].space(),
        "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 81},
        "budget": {"max_trials": n_trials},
        "lease_ttl_s": 600,
    }


def run(n_trials: int, workers: int) -> tuple[float, float, int, int]:
    """Wall and CPU seconds of one run, its jobs and its claims."""
    start, cpu = time.perf_counter(), time.process_time()
    result = simulate(document(n_trials), workers=workers, seed=0)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return elapsed, cpu, result.n_jobs, result.n_claims


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--workers", type=int, default=1_000)
    parser.add_argument("--profile", type=int, default=None, help="profile the run of this size")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {args.workers} workers")
    print(
        f"{'trials':>8} {'jobs':>8} {'claims':>8} {'wall s':>8} {'cpu s':>8} "
        f"{'us/decision':>12} {'cpu us/dec':>11}"
    )
    for n in args.sizes:
        elapsed, cpu, n_jobs, n_claims = run(n, args.workers)
        print(
            f"{n:>8} {n_jobs:>8} {n_claims:>8} {elapsed:>8.2f} {cpu:>8.2f} "
            f"{1e6 * elapsed / n_jobs:>12.1f} {1e6 * cpu / n_jobs:>11.1f}",
            flush=True,
        )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(args.profile, args.workers)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)


if __name__ == "__main__":
    main()
