"""Fault injection over real servers and real HTTP workers; exits 1 if an invariant fails.

Three runs, one after the other (``--only`` picks some): ``postgres`` (one uvicorn process
on a scratch PostgreSQL database), ``sqlite`` (one uvicorn process on a SQLite file) and
``postgres-2`` (two uvicorn processes, replicas, on one PostgreSQL database). Each starts
worker processes (``bench/trainer.py``: claim, report every step with a checkpoint every
three, heartbeat, complete), keeps two small ASHA experiments running (eta 3, resource 1 to
9, 12 trials, 4 s leases; a new one when one ends), and injects a fault every few
seconds, in turn: SIGKILL of a worker that holds a job, SIGSTOP of one for longer than its
lease then SIGCONT (a zombie), SIGKILL of a server (restarted), and ``pg_terminate_backend``
of every PostgreSQL connection of the service. The workers themselves send some reports
twice, out of order, late, or drop the answer and send again. Then no more faults, every
experiment runs to its end, and ``bench/invariants.py`` checks the run from the workers'
logs, the database and the API.

Usage::

    .venv/bin/python bench/faults.py [--seconds 50] [--only postgres,sqlite,postgres-2]
        [--faults kill_worker,zombie,kill_server,pg_terminate] [--client-faults dup,reorder,drop]
        [--postgres URL] [--keep DIR] [--source DIR]

``--source``: run the servers from another checkout (e.g. ``git archive HEAD``), so that
edits in progress in this one do not change the code under test halfway.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import (  # noqa: E402
    DEFAULT_POSTGRES,
    FAULTS,
    ROOT,
    Fleet,
    FleetConfig,
    interrupt_as_exception,
    save_run,
    verdict,
)
from invariants import Findings, check_run  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

SCENARIOS = {
    "postgres": FleetConfig(label="postgres", database="postgres"),
    "sqlite": FleetConfig(label="sqlite", database="sqlite",
                          faults=tuple(f for f in FAULTS if f != "pg_terminate")),
    "postgres-2": FleetConfig(label="postgres-2", database="postgres", replicas=2),
}

FAULT_ROWS = [
    ("kill_worker", "worker SIGKILL"),
    ("zombie", "worker SIGSTOP past its lease, SIGCONT"),
    ("kill_server", "server SIGKILL + restart"),
    ("pg_terminate", "pg_terminate_backend (all)"),
    ("duplicate", "report/complete sent twice"),
    ("reorder", "two steps swapped"),
    ("late", "old step sent again later"),
    ("drop", "answer dropped, sent again"),
    ("retry_re_report", "retry re-reports a step"),
]

CHECK_ROWS = [
    ("acked_reports", "no acknowledged report lost"),
    ("overlapping_leases_client", "one live lease per trial (workers' view)"),
    ("overlapping_leases_jobs_table", "one live lease per trial (jobs table)"),
    ("accepted_after_lease_end", "no write accepted after its lease ended"),
    ("promotions", "promotions valid when decided"),
    ("checkpoints", "retries resume from the checkpoint"),
    ("final", "every trial final"),
    ("budgets", "budgets respected"),
    ("ranking", "each trial ranked by its highest judged rung"),
    ("repeat_answers", "a call sent again gets the first answer (soft)"),
]


def fmt(counts: dict[str, Any] | None) -> str:
    if counts is None:
        return "-"
    parts = []
    for k, v in counts.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk}: {vv}" for kk, vv in v.items()) or "none"
            parts.append(f"{k} ({v})")
        elif isinstance(v, list):
            if v:
                parts.append(f"{k}: {'; '.join(map(str, v))}")
        elif v is not None:
            parts.append(f"{k} {v}")
    return ", ".join(parts)


def print_tables(console: Console, results: dict[str, Findings]) -> None:
    faults = Table(title="Faults injected (counts per run)", show_lines=True)
    faults.add_column("fault")
    for label in results:
        faults.add_column(label)
    for key, title in FAULT_ROWS:
        faults.add_row(title, *(fmt(f.faults.get(key)) for f in results.values()))
    console.print(faults)
    checks = Table(title="Invariants", show_lines=True)
    checks.add_column("check")
    for label in results:
        checks.add_column(label)
    for key, title in CHECK_ROWS:
        cells = []
        for f in results.values():
            c = f.checks[key]
            mark = ("[green]ok[/green]" if c.ok else f"[red]FAILED {c.failed}[/red]" if c.hard
                    else f"[yellow]DIFFERS {c.failed}[/yellow]")
            cells.append(f"{mark} {c.checked} checked; {fmt(c.detail)}"
                         + "".join(f"\n- {e}" for e in c.examples))
        checks.add_row(title, *cells)
    console.print(checks)
    calls = Table(title="Calls (all workers)", show_lines=True)
    calls.add_column("run")
    calls.add_column("calls")
    calls.add_column("answers")
    calls.add_column("latency p50/p99 ms")
    for label, f in results.items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(f.calls["by_status"].items()))
        lat = ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in f.calls["latency_ms"].items())
        calls.add_row(label, str(f.calls["n"]), statuses, lat)
    console.print(calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=50.0,
                        help="seconds of faults per run (then the drain)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated runs: " + ", ".join(SCENARIOS))
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="server-side faults, in turn: " + ", ".join(FAULTS) + " (or none)")
    parser.add_argument("--client-faults", default="dup,reorder,drop",
                        help="what workers do to their own calls: dup (send twice), reorder "
                        "(two steps swapped, an old step sent again later), drop (answer "
                        "dropped, sent again), or none; each at 5%% of reports")
    parser.add_argument("--fault-every", type=float, default=4.0, help="seconds between faults")
    parser.add_argument("--workers", type=int, default=6, help="worker processes per run")
    parser.add_argument("--same-values", action="store_true",
                        help="a retry reports the same value at a step as the lost job did "
                        "(default: a slightly different one, as real training would)")
    parser.add_argument("--keep", type=Path, help="keep logs and the run's JSON here")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="checkout whose api/ and tuner/ the servers run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 170)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="tuner-faults-"))
    results: dict[str, Findings] = {}
    summaries: dict[str, Any] = {}
    ok = False
    with interrupt_as_exception():
        try:
            wanted = set(args.faults.split(",")) - {"none", ""}
            client = set(args.client_faults.split(",")) - {"none", ""}
            unknown = (wanted - set(FAULTS)) | (client - {"dup", "reorder", "drop"})
            if unknown:
                parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
            for label in args.only.split(","):
                base = SCENARIOS[label]
                cfg = replace(
                    base, faults=tuple(f for f in base.faults if f in wanted),
                    p_dup=0.05 * ("dup" in client), p_reorder=0.05 * ("reorder" in client),
                    p_drop=0.05 * ("drop" in client),
                    seconds=args.seconds, postgres=args.postgres,
                    fault_every_s=args.fault_every, worker_processes=args.workers,
                    per_job_values=not args.same_values, source=args.source.resolve(),
                    seed=args.seed,
                )
                t0 = time.monotonic()
                console.print(f"[bold]{label}[/bold]: {cfg.replicas} server process(es), "
                              f"{cfg.worker_processes} workers, faults "
                              f"{', '.join(cfg.faults) or 'none'} every "
                              f"{cfg.fault_every_s:.0f} s for {cfg.seconds:.0f} s; workers' "
                              f"own: {', '.join(sorted(client)) or 'none'}")
                with Fleet(cfg, workdir / label, say=console.print) as fleet:
                    fleet.run()
                    console.print(f"[{label}] checking invariants")
                    results[label] = check_run(fleet)
                    summaries[label] = {**fleet.summary(), "checks": {
                        k: vars(c) for k, c in results[label].checks.items()},
                        "faults": results[label].faults, "calls": results[label].calls}
                console.print(f"[{label}] done in {time.monotonic() - t0:.0f} s")
            print_tables(console, results)
            ok = all(f.ok for f in results.values())
        except KeyboardInterrupt:
            console.print("interrupted: every process it started is stopped")
            return 130
        finally:
            save_run(console.print, workdir, "faults.json", summaries, ok, args.keep)
    return verdict(console.print, ok)


if __name__ == "__main__":
    sys.exit(main())
