"""Soak: N HTTP workers for T minutes on two replicas over PostgreSQL, with a fault every
30 s; prints throughput, errors, latency per route and the servers' memory, then checks the
same invariants as ``bench/faults.py`` (exit 1 if one fails).

The workers are ``bench/trainer.py`` processes, each running ``--per-process`` asyncio
workers over httpx, against two uvicorn processes on one scratch PostgreSQL database. A few
ASHA experiments run at once (eta 3, resource 1 to 27, ``--max-trials`` trials each; a new
one when one ends). Faults rotate: SIGKILL of a worker process (all its workers; a new
process replaces it), SIGSTOP of one past its lease then SIGCONT (zombies), SIGKILL of a
server (restarted), ``pg_terminate_backend`` of the service's connections; the workers also
duplicate, reorder and drop the answers of a few calls themselves.

Usage::

    .venv/bin/python bench/soak.py [--workers 200] [--minutes 10] [--per-process 25]
        [--fault-every 30] [--step-s 1.0] [--lease-ttl 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faults import print_tables  # noqa: E402
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
from invariants import check_run, read_logs  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def windows(calls: list[dict[str, Any]], start: float, width_s: float) -> list[float]:
    """Acknowledged reports per second in each whole window of ``width_s``."""
    ends = [c["tr"] for c in calls if c["kind"] == "report" and c["status"] == 200]
    if not ends:
        return []
    n = int((max(ends) - start) // width_s)
    counts = [0] * max(n, 1)
    for t in ends:
        k = int((t - start) // width_s)
        if 0 <= k < len(counts):
            counts[k] += 1
    return [round(c / width_s, 1) for c in counts]


def server_errors(workdir: Path) -> dict[str, int]:
    """Lines at ERROR or worse, and tracebacks, in each server's log."""
    out = {}
    for path in sorted(workdir.glob("server*.log")):
        text = path.read_text(errors="replace")
        out[path.stem] = len(re.findall(r"Traceback|\bERROR\b|\bCRITICAL\b", text))
    return out


def figures(fleet: Fleet, leases: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [c for c in calls if c["status"] == 200]
    errors = Counter(f"{c['kind']} {c['status']} {c['code']}".strip() for c in calls
                     if c["status"] not in (200, -2))
    duration = max((c["tr"] for c in calls), default=fleet.started_at) - fleet.started_at
    start = {s.name: s.starts[0][1] for s in fleet.servers}
    end = next(x for x in reversed(fleet.samples) if x["when"] == "end")
    peak = {s.name: max((x.get(s.name) or 0) for x in fleet.samples) for s in fleet.servers}
    return {
        "duration_s": round(duration),
        "reports_acknowledged": sum(c["kind"] == "report" for c in ok),
        "reports_per_s": round(sum(c["kind"] == "report" for c in ok) / max(duration, 1), 1),
        "leases": leases,
        "completions": sum(c["kind"] == "complete" for c in ok),
        "heartbeats": sum(c["kind"] == "heartbeat" for c in ok),
        "experiments": fleet.query("SELECT count(*) FROM experiments")[0][0],
        "trials": fleet.query("SELECT count(*) FROM trials")[0][0],
        "errors": dict(errors.most_common()),
        "rss_mib": {name: {"start": round((start[name] or 0) / 1024),
                           "peak": round(peak[name] / 1024),
                           "end": round((end.get(name) or 0) / 1024),
                           "restarts": len(s.starts) - 1}
                    for name, s in ((s.name, s) for s in fleet.servers)},
        "server_log_errors": server_errors(fleet.workdir),
        "reports_per_s_by_minute": windows(calls, fleet.started_at, 60.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--per-process", type=int, default=25, help="workers per process")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fault-every", type=float, default=30.0)
    parser.add_argument("--step-s", type=float, default=1.0, help="mean seconds per step")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--max-trials", type=int, default=1000, help="per experiment")
    parser.add_argument("--experiments", type=int, default=3, help="running at once")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    parser.add_argument("--api-sample", type=int, default=200,
                        help="trials whose history is also read through the API")
    parser.add_argument("--keep", type=Path, help="keep logs and soak.json here")
    parser.add_argument("--source", type=Path, default=ROOT)
    args = parser.parse_args()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 170)
    processes = max(1, -(-args.workers // args.per_process))
    cfg = FleetConfig(
        label="soak", database="postgres", replicas=2, faults=FAULTS,
        fault_every_s=args.fault_every, seconds=args.minutes * 60, drain_s=180.0,
        worker_processes=processes, workers_per_process=args.per_process,
        concurrent_experiments=args.experiments, max_trials=args.max_trials, max_resource=27,
        lease_ttl_s=args.lease_ttl, reaper_interval_s=1.0, step_s=args.step_s,
        heartbeat_s=args.lease_ttl / 4, p_dup=0.01, p_reorder=0.01, p_drop=0.01,
        postgres=args.postgres, source=args.source.resolve(), progress_every_s=30.0,
    )
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="tuner-soak-"))
    console.print(f"soak: {processes * args.per_process} workers in {processes} processes, "
                  f"2 server processes on PostgreSQL, {args.minutes:g} min, a fault every "
                  f"{args.fault_every:g} s ({', '.join(FAULTS)})")
    ok = False
    summary: dict[str, Any] = {}
    with interrupt_as_exception():
        try:
            with Fleet(cfg, workdir, say=console.print) as fleet:
                t0 = time.monotonic()
                fleet.run()
                console.print(f"ran {time.monotonic() - t0:.0f} s; reading the logs")
                leases, calls = read_logs(workdir)
                figs = figures(fleet, len(leases), calls)
                console.print("checking invariants")
                findings = check_run(fleet, api_sample=args.api_sample)
                summary = {**fleet.summary(), "figures": figs, "faults": findings.faults,
                           "calls": findings.calls,
                           "checks": {k: vars(c) for k, c in findings.checks.items()}}
            print_figures(console, figs, findings.calls)
            print_tables(console, {"soak": findings})
            ok = findings.ok
        except KeyboardInterrupt:
            console.print("interrupted: every process it started is stopped")
            return 130
        finally:
            save_run(console.print, workdir, "soak.json", summary, ok, args.keep)
    return verdict(console.print, ok)


def print_figures(console: Console, figs: dict[str, Any], calls: dict[str, Any]) -> None:
    table = Table(title="Soak figures", show_lines=True)
    table.add_column("figure")
    table.add_column("value")
    for key in ("duration_s", "reports_acknowledged", "reports_per_s", "leases", "completions",
                "heartbeats", "experiments", "trials"):
        table.add_row(key, str(figs[key]))
    table.add_row("reports/s by minute", ", ".join(map(str, figs["reports_per_s_by_minute"])))
    table.add_row("answers other than 200", "\n".join(
        f"{k}: {v}" for k, v in figs["errors"].items()) or "none")
    table.add_row("latency p50/p99 ms", "\n".join(
        f"{k}: {v['p50']}/{v['p99']} (n={v['n']})" for k, v in calls["latency_ms"].items()))
    table.add_row("server RSS MiB", "\n".join(
        f"{k}: start {v['start']}, peak {v['peak']}, end {v['end']} ({v['restarts']} restarts;"
        " start is the first process's)" for k, v in figs["rss_mib"].items()))
    table.add_row("ERROR lines in server logs", ", ".join(
        f"{k}: {v}" for k, v in figs["server_log_errors"].items()))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
