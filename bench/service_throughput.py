"""Service throughput: N concurrent HTTP workers against a real uvicorn server.

Each worker claims a job (long poll), reports every step (resource unit) and completes it,
over keep-alive HTTP (``http.client``: the load generator shares the CPUs with the server, so
its cost per request is kept small). Printed per database: claims/s, reports/s, completions/s
and p50/p99 latency of each call, and reports/s in 5 s windows (does it hold as the
experiment grows?). On PostgreSQL the server runs once as one uvicorn process
and once as ``--pg-processes`` processes (``uvicorn --workers``: replicas of one service on
one database, as the design allows; SQLite serves one process only). Then the same workload
through Optuna's RDB storage on the same PostgreSQL (ask, report each step, should_prune with
SuccessiveHalvingPruner, tell), the ratio of the two, and what PostgreSQL itself commits
(``pgbench -N``) as the ceiling.

Usage::

    .venv/bin/python bench/service_throughput.py [--workers 32] [--seconds 15]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--skip-optuna]
        [--pg-processes N] [--skip-pgbench]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.storage.database import make_engine, normalize_url, upgrade  # noqa: E402

ADMIN = "bench-admin-token"
DOC = {
    "name": "bench",
    "space": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
              "width": {"type": "int", "low": 1, "high": 512}},
    "scheduler": {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9},
    "budget": {"max_trials": 1_000_000},
    "lease_ttl_s": 120,
}


def loss(lr: float, step: int) -> float:
    return abs(math.log10(lr) + 2.0) + 1.0 / step


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Conn:
    """One keep-alive HTTP connection with JSON in and out."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.conn.request("POST", path, json.dumps(body), self.headers)
        answer = self.conn.getresponse()
        data = answer.read()
        return answer.status, (json.loads(data) if data else None)

    def text(self, path: str) -> str:
        self.conn.request("GET", path, headers=self.headers)
        return self.conn.getresponse().read().decode()


def grouped(metrics: str) -> tuple[float, float]:
    """Transactions committed in groups of two or more, and their mean group size, from
    one server process's /metrics (api.group_commit)."""
    found = dict(re.findall(r"^tuner_write_group_size_(sum|count) ([\d.e+]+)$", metrics, re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of a process and its children so far (Linux /proc), None
    where /proc is missing."""
    try:
        pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        ticks = sum(
            int(f) for p in pids for f in Path(f"/proc/{p}/stat").read_text().split()[13:15]
        )
    except (OSError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    url: str, log: Path, processes: int = 1
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "TUNER_DATABASE_URL": url, "TUNER_ADMIN_TOKEN": ADMIN}
    if processes > 1:
        upgrade(url)  # once, before the replicas start (each checks it again: a no-op)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port",
         str(port), "--no-access-log", "--log-level", "warning", "--workers", str(processes)],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(log.read_text()[-2000:])


def run_tuner(
    url: str, workers: int, seconds: float, processes: int = 1, form: str = "stopping",
    next_job: bool = True,
) -> dict[str, Any]:
    doc = {**DOC, "scheduler": {**DOC["scheduler"], "form": form}}
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(url, Path(tmp) / "server.log", processes)
        try:
            admin = Conn(port, ADMIN)
            status, experiment = admin.post("/api/v1/experiments", doc)
            assert status == 201, experiment
            status, token = admin.post("/api/v1/tokens", {"role": "worker", "name": "bench"})
            eid = experiment["id"]
            lat: dict[str, list[float]] = defaultdict(list)
            report_ends: list[float] = []  # when each report was answered (monotonic)
            handed = [0]  # jobs that came with an answer instead of a claim
            lock = threading.Lock()
            stop_at = time.monotonic() + seconds

            def worker(i: int) -> None:
                c = Conn(port, token["token"])
                mine: dict[str, list[float]] = defaultdict(list)
                ends: list[float] = []

                def call(kind: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
                    t = time.perf_counter()
                    out = c.post(path, body)
                    mine[kind].append(time.perf_counter() - t)
                    if kind == "report":
                        ends.append(time.monotonic())
                    return out

                ask = {"next": {"worker_id": f"w{i}"}} if next_job else {}
                job = None
                n_handed = 0
                while time.monotonic() < stop_at:
                    if job is None:
                        status, job = call("claim", f"/api/v1/experiments/{eid}/claims",
                                           {"worker_id": f"w{i}", "wait_s": 1})
                        if status != 200:
                            job = None
                            continue
                    for step in range(job["from_resource"] + 1, job["to_resource"] + 1):
                        _, answer = call("report", f"/api/v1/jobs/{job['job_id']}/reports",
                                         {"lease_token": job["lease_token"], "step": step,
                                          "value": loss(job["params"]["lr"], step), **ask})
                        if answer.get("decision") == "stop":
                            break
                    else:
                        _, answer = call("complete", f"/api/v1/jobs/{job['job_id']}/complete",
                                         {"lease_token": job["lease_token"], **ask})
                    job = answer.get("next")
                    n_handed += job is not None
                with lock:
                    handed[0] += n_handed
                    report_ends.extend(ends)
                    for k, v in mine.items():
                        lat[k].extend(v)

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
            cpu_before = cpu_seconds(proc.pid)
            start = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - start
            cpu_after = cpu_seconds(proc.pid)
            # One process's figures: with several, only the one that answers.
            metrics_text = Conn(port, ADMIN).text("/metrics")
            if os.environ.get("BENCH_METRICS_OUT"):
                Path(os.environ["BENCH_METRICS_OUT"]).write_text(metrics_text)
            in_groups, n_groups = grouped(metrics_text) if processes == 1 else (0.0, 0.0)
        finally:
            proc.terminate()
            proc.wait(10)
    n_transactions = sum(len(v) for v in lat.values())
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "elapsed_s": elapsed,
        "server_cpu_ms_per_tx": 1000 * server_cpu / n_transactions if server_cpu else None,
        **{f"{k}_per_s": len(v) / elapsed for k, v in lat.items()},
        **{f"{k}_p50_ms": 1000 * pct(v, 0.5) for k, v in lat.items()},
        **{f"{k}_p99_ms": 1000 * pct(v, 0.99) for k, v in lat.items()},
        "transactions_per_s": n_transactions / elapsed,
        "next_job_per_s": handed[0] / elapsed,
        "in_groups": in_groups / max(n_transactions, 1),
        "group_size": in_groups / max(n_groups, 1),
        "report_windows": windows(report_ends, start, seconds),
    }


#: The width of the windows that show whether throughput holds as the experiment grows.
WINDOW_S = 5.0


def windows(ends: list[float], start: float, seconds: float) -> list[float]:
    """Reports per second in each whole ``WINDOW_S`` window of the run."""
    counts = [0] * int(seconds // WINDOW_S)
    for end in ends:
        k = int((end - start) // WINDOW_S)
        if 0 <= k < len(counts):
            counts[k] += 1
    return [n / WINDOW_S for n in counts]


def run_optuna(url: str, workers: int, seconds: float) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sa_url = normalize_url(url).render_as_string(hide_password=False)
    storage = optuna.storages.RDBStorage(sa_url)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    name = f"bench-{time.time_ns()}"
    optuna.create_study(study_name=name, storage=storage, pruner=pruner)
    reports: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        mine = []
        while time.monotonic() < stop_at:
            trial = study.ask()
            lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
            trial.suggest_int("width", 1, 512)
            pruned = False
            for step in range(1, 10):
                t = time.perf_counter()
                trial.report(loss(lr, step), step)
                prune = trial.should_prune()
                mine.append(time.perf_counter() - t)
                if prune:
                    pruned = True
                    break
            study.tell(trial, state=optuna.trial.TrialState.PRUNED if pruned else None,
                       values=None if pruned else loss(lr, 9))
        with lock:
            reports.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"report_per_s": len(reports) / elapsed, "report_p50_ms": 1000 * pct(reports, 0.5),
            "report_p99_ms": 1000 * pct(reports, 0.99)}


def run_pgbench(url: str, seconds: int = 10) -> float | None:
    parsed = normalize_url(url)
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    db = "tuner_pgbench"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {db}"))
        conn.execute(text(f"CREATE DATABASE {db}"))
    args = ["-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
            "-U", parsed.username or "postgres"]
    try:
        subprocess.run(["pgbench", "-i", "-q", *args, db], check=True, capture_output=True)
        out = subprocess.run(
            ["pgbench", "-N", "-T", str(seconds), "-c", "8", "-j", "2", *args, db],
            check=True, capture_output=True, text=True,
        ).stdout
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()
    found = re.search(r"tps = ([\d.]+)", out)
    return float(found.group(1)) if found else None


def scratch_pg(url: str, name: str) -> str:
    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return normalize_url(url).set(database=name).render_as_string(hide_password=False)


def show(label: str, r: dict[str, Any]) -> None:
    print(f"{label}: claims/s {r.get('claim_per_s', 0):.0f}"
          f" (+{r.get('next_job_per_s', 0):.0f} jobs/s with a report's answer)"
          f"  reports/s {r.get('report_per_s', 0):.0f}"
          f"  completes/s {r.get('complete_per_s', 0):.0f}  | p50/p99 ms: claim "
          f"{r.get('claim_p50_ms', 0):.1f}/{r.get('claim_p99_ms', 0):.1f}  report "
          f"{r.get('report_p50_ms', 0):.1f}/{r.get('report_p99_ms', 0):.1f}  complete "
          f"{r.get('complete_p50_ms', 0):.1f}/{r.get('complete_p99_ms', 0):.1f}"
          f"  | transactions/s {r.get('transactions_per_s', 0):.0f}"
          + (f", server CPU {r['server_cpu_ms_per_tx']:.2f} ms each"
             if r.get("server_cpu_ms_per_tx") else "")
          + (f"; {r['in_groups']:.0%} in groups of {r['group_size']:.1f} on average"
             if r.get("in_groups") else ""))
    if len(r.get("report_windows", [])) > 1:
        print(f"  reports/s by {WINDOW_S:.0f} s window: "
              + ", ".join(f"{x:.0f}" for x in r["report_windows"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--postgres", default=os.environ.get(
        "TUNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--skip-optuna", action="store_true")
    parser.add_argument(
        "--form", choices=["stopping", "promotion"], default="stopping",
        help="ASHA form for tuner; stopping is the rule of Optuna's SuccessiveHalvingPruner, "
        "so both run the same workload (trials toward step 9, judged at rungs 1 and 3)")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--no-next", action="store_true",
        help="claim every job with its own request (default: ask for the next job in the "
        "report or completion that ends one, as the SDK's job loop does)")
    parser.add_argument("--pg-processes", type=int, default=os.cpu_count() or 1,
                        help="uvicorn processes for the second PostgreSQL run (1: no second run)")
    parser.add_argument("--skip-pgbench", action="store_true",
                        help="do not measure PostgreSQL's own ceiling with pgbench")
    args = parser.parse_args()
    print(f"{args.workers} workers, {args.seconds:.0f} s per run, {os.cpu_count()} CPUs, "
          f"ASHA {args.form} form")
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = run_tuner(
                f"sqlite:///{tmp}/bench.db", args.workers, args.seconds, form=args.form,
                next_job=not args.no_next,
            )
        show("tuner sqlite    ", sqlite)
    pg_url = scratch_pg(args.postgres, "tuner_bench")
    pg = run_tuner(pg_url, args.workers, args.seconds, form=args.form, next_job=not args.no_next)
    show("tuner postgresql", pg)
    if args.pg_processes > 1:
        pg_url = scratch_pg(args.postgres, "tuner_bench")
        pg_n = run_tuner(
            pg_url, args.workers, args.seconds, args.pg_processes, args.form, not args.no_next
        )
        show(f"tuner postgresql, {args.pg_processes} processes", pg_n)
        if pg_n["report_per_s"] > pg["report_per_s"]:
            pg = pg_n
    if not args.skip_optuna:
        optuna_url = scratch_pg(args.postgres, "optuna_bench")
        opt = run_optuna(optuna_url, args.workers, args.seconds)
        print(f"optuna postgresql: reports/s {opt['report_per_s']:.0f}  report+should_prune "
              f"p50/p99 ms {opt['report_p50_ms']:.1f}/{opt['report_p99_ms']:.1f}")
        print(f"ratio tuner (best PostgreSQL run) / optuna reports/s: "
              f"{pg['report_per_s'] / max(opt['report_per_s'], 1e-9):.1f}x")
    tps = None if args.skip_pgbench else run_pgbench(args.postgres)
    if tps:
        print(f"pgbench -N -c 8 (simple update) tps: {tps:.0f}; tuner's share: "
              f"{pg['transactions_per_s'] / tps:.0%} of it")


if __name__ == "__main__":
    main()
