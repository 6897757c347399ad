"""Server-side decision latency with 1k, 10k and 100k trials in one experiment.

The experiment (ASHA, r=1, R=9, eta=3) is seeded in bulk with SQLAlchemy Core: ``n`` trials
paused at rung 0 with their rung results and counters, as if ``n`` jobs had completed. Then,
in-process (the app's own transaction runner, no HTTP), ``--cycles`` rounds of: claim (a
promotion out of rung 0 or 1, decided by the indexed rung queries), a report per step, and
the completion (recorded at the next rung and judged). Printed: p50/p99 milliseconds of each
transaction (begin to commit), per database and size.

Usage::

    .venv/bin/python bench/decision_latency.py [--sizes 1000 10000 100000] [--cycles 200]
        [--postgres URL] [--skip-sqlite]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.deps import Runtime  # noqa: E402
from api.main import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from bench.service_throughput import DOC, pct, scratch_pg  # noqa: E402
from tuner import coordinator  # noqa: E402
from tuner.coordinator import Assignment  # noqa: E402
from tuner.space import params_key  # noqa: E402
from tuner.storage.models import (  # noqa: E402
    BracketRow,
    ExperimentRow,
    RungResultRow,
    RungRow,
    TrialRow,
)


def seed(runtime: Runtime, n: int) -> int:
    """One experiment with ``n`` trials paused at rung 0 (bulk insert, one transaction)."""
    doc = {**DOC, "budget": {"max_trials": n + 1_000_000}}
    rng = random.Random(n)
    now = time.time()

    def run(store: Any) -> int:
        experiment = coordinator.create_experiment(store, doc, now)
        session, eid = store.session, experiment.id
        trials, results = [], []
        for number in range(n):
            params = {"lr": 10 ** rng.uniform(-4, 0), "width": rng.randint(1, 512)}
            loss = abs(params["lr"] - 0.01) + rng.random()
            trials.append({
                "experiment_id": eid, "number": number, "bracket": 0, "params": params,
                "params_key": params_key(params), "state": "paused", "rung": 0, "resource": 1,
                "checkpoint": f"ckpt/{number}", "checkpoint_step": 1, "best_loss": loss,
                "best_loss_kind": "finite", "last_value": loss, "last_value_kind": "finite",
                "retries": 0, "stop_requested": False, "created_at": now, "updated_at": now,
                "ranked_kind": 0, "ranked_step": 1, "ranked_loss": loss,  # tuner.ranking
            })
            results.append({"loss": loss, "number": number})
        for start in range(0, n, 10_000):
            session.execute(insert(TrialRow), trials[start:start + 10_000])
        ids = dict(session.execute(
            TrialRow.__table__.select().with_only_columns(TrialRow.number, TrialRow.id)
            .where(TrialRow.experiment_id == eid)
        ).all())
        rows = [{
            "experiment_id": eid, "bracket": 0, "rung": 0, "trial_number": r["number"],
            "trial_id": ids[r["number"]], "loss": r["loss"], "loss_rank_kind": 0,
            "value": r["loss"], "value_kind": "finite", "status": 0, "created_at": now,
            "resource": 1,
        } for r in results]
        for start in range(0, n, 10_000):
            session.execute(insert(RungResultRow), rows[start:start + 10_000])
        session.execute(insert(RungRow).values(
            experiment_id=eid, bracket=0, rung=0, n_results=n, n_left=0, n_promoted=0))
        session.execute(insert(BracketRow).values(experiment_id=eid, bracket=0, n_trials=n))
        session.execute(update(ExperimentRow).where(ExperimentRow.id == eid).values(
            n_trials=n, resource_used=n))
        return int(eid)

    return runtime.writer.write("seed", run)


def measure(runtime: Runtime, eid: int, cycles: int) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = defaultdict(list)

    def timed(kind: str, fn: Any) -> Any:
        start = time.perf_counter()
        out = fn()
        lat[kind].append(time.perf_counter() - start)
        return out

    for _ in range(cycles):
        found = timed("claim", lambda: runtime.writer.write(
            "claim", lambda st: coordinator.claim(st, eid, "bench", runtime.now())))
        if not isinstance(found, Assignment):
            raise RuntimeError(f"no job: {found}")
        job_id, token = found.job.id, found.lease_token

        def report(st: Any, j: int = job_id, t: str = token, s: int = 0, v: float = 0.0) -> Any:
            return coordinator.report(st, j, t, s, v, runtime.now())

        def complete(st: Any, j: int = job_id, t: str = token) -> Any:
            return coordinator.complete(st, j, t, runtime.now())

        for step in range(found.job.from_resource + 1, found.job.to_resource + 1):
            value = 0.5 + 1.0 / step + random.random()
            timed("report", lambda s=step, v=value, r=report: runtime.writer.write(
                "report", lambda st: r(st, s=s, v=v)))
        timed("complete", lambda c=complete: runtime.writer.write("complete", c))
    return lat


def run(url: str, n: int, cycles: int) -> dict[str, list[float]]:
    app = create_app(Settings(database_url=url, admin_token="bench", reaper_interval_s=0))
    runtime: Runtime = app.state.runtime
    start = time.perf_counter()
    eid = seed(runtime, n)
    with runtime.engine.connect() as conn:  # fresh planner statistics, as autovacuum would
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    seeded = time.perf_counter() - start
    measure(runtime, eid, 10)  # warm caches and connections
    lat = measure(runtime, eid, cycles)
    runtime.engine.dispose()
    print(f"  seeded {n} trials in {seeded:.1f} s", flush=True)
    return lat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--postgres", default=os.environ.get(
        "TUNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    header = f"{'database':<11}{'trials':>8}" + "".join(
        f"{k + ' p50/p99 ms':>26}" for k in ("claim", "report", "complete"))
    results = []
    for kind in (["postgresql"] if args.skip_sqlite else ["sqlite", "postgresql"]):
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                url = (f"sqlite:///{tmp}/decide.db" if kind == "sqlite"
                       else scratch_pg(args.postgres, "tuner_decide"))
                print(f"{kind} {n}...", flush=True)
                lat = run(url, n, args.cycles)
            cells = "".join(
                f"{1000 * pct(lat[k], 0.5):>17.2f} / {1000 * pct(lat[k], 0.99):>6.2f}"
                for k in ("claim", "report", "complete"))
            results.append(f"{kind:<11}{n:>8}{cells}")
    print(header)
    print("\n".join(results))


if __name__ == "__main__":
    main()
