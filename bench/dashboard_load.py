"""How fast the dashboard's experiment page is on a large experiment.

Builds a SQLite database with one experiment of 10,000 trials x 50 reports (500,000
reports, 50,000 rung results; inserted in big transactions with SQLAlchemy Core), then

1. times every JSON request the experiment page makes, server-side through FastAPI's
   TestClient (cold first call, then the median of ``--repeat`` calls); target < 300 ms each;
2. with ``--browser``: serves the same database with uvicorn and times, in Chromium driven by
   Playwright, how long the experiment page takes to be usable (trials table filled, curves,
   parallel coordinates and importance charts drawn); target < 2 s.

    .venv/bin/python bench/dashboard_load.py --browser            # full run
    .venv/bin/python bench/dashboard_load.py --trials 2000 --db /tmp/x.db

The database is kept (``--db``) and reused when it already holds the experiment.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from tuner.config import parse_config  # noqa: E402
from tuner.domain import JobState, TrialState, ValueKind  # noqa: E402
from tuner.ranking import RANKED_FINITE  # noqa: E402
from tuner.space.keys import params_key  # noqa: E402
from tuner.storage.database import make_engine, make_session_factory, upgrade  # noqa: E402
from tuner.storage.models import (  # noqa: E402
    RUNG_CLOSED,
    RUNG_OPEN,
    RUNG_PROMOTED,
    BracketRow,
    ExperimentRow,
    JobRow,
    ReportRow,
    RungResultRow,
    RungRow,
    TrialRow,
    WorkerRow,
)
from tuner.storage.sql import open_store  # noqa: E402

ADMIN = "bench-admin-token"
LEVELS = (1, 3, 9, 27, 50)  # r=1, R=50, eta=3
ETA = 3

DOCUMENT: dict[str, Any] = {
    "name": "bench: 10k trials",
    "metric": "val_loss",
    "mode": "min",
    "space": {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "batch": {"type": "int", "low": 16, "high": 512, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "adamw", "lion"]},
        "layers": {"type": "int", "low": 1, "high": 8},
    },
    "scheduler": {"type": "asha", "eta": ETA, "min_resource": 1, "max_resource": 50},
    "budget": {"max_trials": 12000, "max_concurrent": 64},
    "seed": 1,
}


def _floor(p: dict[str, Any]) -> float:
    return (0.25 * (math.log10(p["lr"]) + 2.5) ** 2 + 0.4 * p["dropout"]
            + {"sgd": 0.3, "adam": 0.0, "adamw": 0.02, "lion": 0.1}[p["optimizer"]]
            + 0.03 * abs(p["layers"] - 4))


def build(url: str, n_trials: int, n_reports: int) -> int:
    """Create the experiment and its history; return its id."""
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        found = session.scalar(
            select(ExperimentRow.id).where(ExperimentRow.name == DOCUMENT["name"]))
        if found is not None:
            n = session.scalar(select(func.count()).select_from(TrialRow)
                               .where(TrialRow.experiment_id == found))
            if n == n_trials:
                print(f"reusing experiment {found} ({n} trials) in {url}")
                return int(found)
    t0 = time.perf_counter()
    rng = random.Random(7)
    config = parse_config(DOCUMENT)
    now = time.time() - 3600
    with factory.begin() as session:
        exp = open_store(session).create_experiment(config, now)
    eid = exp.id
    trials, jobs, params_of, floors = [], [], {}, {}
    for i in range(n_trials):
        p = {"lr": 10 ** rng.uniform(-5, 0), "batch": int(2 ** rng.uniform(4, 9)),
             "dropout": rng.uniform(0, 0.6),
             "optimizer": rng.choice(["sgd", "adam", "adamw", "lion"]),
             "layers": rng.randint(1, 8)}
        params_of[i], floors[i] = p, _floor(p)
    # Rank by the final floor: the top third of each rung goes on (promoted), the rest close.
    order = sorted(range(n_trials), key=lambda i: floors[i])
    rank = {i: r for r, i in enumerate(order)}

    def top_rung(i: int) -> int:
        k, keep = 0, n_trials
        while k + 1 < len(LEVELS) and rank[i] < keep // ETA:
            keep //= ETA
            k += 1
        return k

    states = [TrialState.COMPLETED, TrialState.STOPPED, TrialState.STOPPED, TrialState.PAUSED,
              TrialState.RUNNING, TrialState.FAILED]
    curve: dict[int, list[float]] = {}
    for i in range(n_trials):
        noise = random.Random(i)
        values = [round(floors[i] + 1.5 / math.sqrt(s) + noise.gauss(0, 0.01), 6)
                  for s in range(1, n_reports + 1)]
        curve[i] = values
        k = top_rung(i)
        state = TrialState.COMPLETED if k == len(LEVELS) - 1 else states[i % len(states)]
        t = now + i * 0.3
        tid, jid = i + 1, i + 1
        trials.append({
            "id": tid, "experiment_id": eid, "number": i, "bracket": 0, "params": params_of[i],
            "params_key": params_key(params_of[i]), "state": state, "rung": k,
            "resource": n_reports, "checkpoint": f"s3://bench/trial-{i}",
            "checkpoint_step": n_reports,
            "best_loss": min(values), "best_loss_kind": ValueKind.FINITE,
            # the ranked result: the value at the highest rung reached (tuner.ranking)
            "ranked_kind": RANKED_FINITE, "ranked_step": min(LEVELS[k], n_reports),
            "ranked_loss": values[min(LEVELS[k], n_reports) - 1],
            "last_value": values[-1], "last_value_kind": ValueKind.FINITE, "retries": 0,
            "stop_requested": False, "created_at": t, "updated_at": t + 60,
            "ended_at": None if state in (TrialState.RUNNING, TrialState.PAUSED) else t + 60,
            "output_tail": f"trial {i} done\n",
        })
        jobs.append({
            "id": jid, "experiment_id": eid, "trial_id": tid, "trial_number": i, "bracket": 0,
            "rung": k, "from_resource": 0, "to_resource": n_reports, "checkpoint": None,
            "state": JobState.LEASED if state is TrialState.RUNNING else JobState.DONE,
            "attempt": 0, "worker_id": f"bench-worker-{i % 32}", "token_hash": None,
            "lease_expires_at": t + 86400 * 365, "created_at": t, "ended_at": None,
        })
    with factory.begin() as session:
        session.execute(insert(TrialRow), trials)
        session.execute(insert(JobRow), jobs)
        session.execute(insert(BracketRow), [{"experiment_id": eid, "bracket": 0,
                                              "n_trials": n_trials}])
        session.execute(ExperimentRow.__table__.update().where(ExperimentRow.id == eid)
                        .values(n_trials=n_trials, resource_used=n_trials * n_reports))
        session.execute(insert(WorkerRow), [{
            "id": f"bench-worker-{w}", "host": f"gpu-{w // 8}", "gpus": [f"H100 #{w % 8}"],
            "cpus": 16, "slots": 1, "labels": {}, "created_at": now, "last_seen_at": time.time(),
            "lost_leases": w % 3} for w in range(32)])
    print(f"trials and jobs: {time.perf_counter() - t0:.1f} s")
    batch: list[dict[str, Any]] = []
    with factory.begin() as session:
        for i in range(n_trials):
            t = now + i * 0.3
            for s, v in enumerate(curve[i], start=1):
                batch.append({"trial_id": i + 1, "job_id": i + 1, "step": s, "value": v,
                              "value_kind": ValueKind.FINITE,
                              "metrics": {"accuracy": round(1 - v / 3, 4), "lr_now": 0.1 / s},
                              "created_at": t + s})
            if len(batch) >= 50_000:
                session.execute(insert(ReportRow), batch)
                batch.clear()
        if batch:
            session.execute(insert(ReportRow), batch)
    print(f"+ reports: {time.perf_counter() - t0:.1f} s")
    results, counters = [], {}
    for i in range(n_trials):
        k = top_rung(i)
        for rung in range(k + 1):
            step = min(LEVELS[rung], n_reports)
            status = RUNG_PROMOTED if rung < k else (
                RUNG_OPEN if trials[i]["state"] in (TrialState.PAUSED, TrialState.COMPLETED)
                else RUNG_CLOSED)
            v = curve[i][step - 1]
            results.append({"experiment_id": eid, "bracket": 0, "rung": rung, "resource": step,
                            "trial_number": i,
                            "trial_id": i + 1, "loss": v, "loss_rank_kind": 0, "value": v,
                            "value_kind": ValueKind.FINITE, "status": status,
                            "created_at": now + i * 0.3 + step})
            c = counters.setdefault(rung, [0, 0, 0])
            c[0] += 1
            c[1] += status != RUNG_OPEN
            c[2] += status == RUNG_PROMOTED
    with factory.begin() as session:
        session.execute(insert(RungResultRow), results)
        session.execute(insert(RungRow), [
            {"experiment_id": eid, "bracket": 0, "rung": r, "n_results": c[0], "n_left": c[1],
             "n_promoted": c[2]} for r, c in counters.items()])
    engine.dispose()
    print(f"built experiment {eid}: {n_trials} trials x {n_reports} reports, "
          f"{len(results)} rung results in {time.perf_counter() - t0:.1f} s")
    return eid


def page_requests(eid: int) -> list[str]:
    """Every JSON request the experiment page makes (first load, then each poll: the trials
    table is the export's JSON, read in slices of 2,000), the comparison of four trials and
    the CSV download, the whole export as the CLI reads it, the trial page's two reads,
    plus the trials list's sorts, a filter and its last page."""
    base = f"/api/v1/experiments/{eid}"
    ui = f"/ui/api/experiments/{eid}"
    return [
        "/ui/api/whoami",
        base,
        base + "/trials?order_by=value&limit=1",
        base + "/rungs",
        base + "/export?format=json&limit=2000&offset=0",  # the table, read in slices
        base + "/export?format=json&limit=2000&offset=8000",
        ui + "/curves",
        ui + "/best-so-far",
        ui + "/parcoords",
        ui + "/importance",
        ui + "/compare?trial=0&trial=1&trial=2&trial=3",
        base + "/export?format=csv",  # the download button
        base + "/export?format=json",  # everything at once (tuner export, the SDK)
        base + "/trials/5",
        "/ui/api/trials/6/workers",
        base + "/trials?limit=50&offset=0&order_by=value",
        base + "/trials?limit=50&offset=0&order_by=updated",
        base + "/trials?limit=50&offset=0&order_by=number&state=stopped",
        base + "/trials?limit=50&offset=9950&order_by=value",
    ]


def time_requests(
    url: str, eid: int, repeat: int
) -> list[tuple[str, float, float, float, int]]:
    """Per request: path, cold ms (the first call in a fresh app), the CPU ms of that call
    (this process's: the app runs in it; less disturbed by a busy machine than wall time),
    the median ms of ``repeat`` more calls, and the answer's size."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import Settings
    app = create_app(Settings(database_url=url, admin_token=ADMIN, reaper_interval_s=0))
    rows = []
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        client.get("/healthz")  # warm up: the first request starts the thread pool
        for path in page_requests(eid):
            t, cpu = time.perf_counter(), time.process_time()
            r = client.get(path)
            cold = time.perf_counter() - t
            cold_cpu = time.process_time() - cpu
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            size = len(r.content)
            warm = []
            for _ in range(repeat):
                t = time.perf_counter()
                client.get(path)  # no If-None-Match: the full answer every time
                warm.append(time.perf_counter() - t)
            rows.append((path, cold * 1000, cold_cpu * 1000, statistics.median(warm) * 1000, size))
    return rows


def time_browser(url: str, eid: int) -> list[tuple[float, dict[str, int]]]:
    """Per visit (first, then again with a warm cache): seconds until the experiment page is
    usable (table filled, learning curves and importance drawn), and the page's own
    milestones (ms since navigation start): table filled, Plotly loaded, each chart drawn
    (parallel coordinates once scrolled into view)."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TUNER_DATABASE_URL": url, "TUNER_ADMIN_TOKEN": ADMIN,
           "TUNER_REAPER_INTERVAL_S": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app",
                             "--factory", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    # Usable: the table filled and the charts in the first screens drawn. Parallel
    # coordinates are drawn when scrolled to (timed below, as the "parcoords" mark).
    ready = ("() => document.querySelectorAll('#trials-table tbody tr').length >= 50 && "
             "['#curves-chart', '#importance-chart'].every(s => "
             "{ const d = document.querySelector(s); return d && d.data && d.data.length; })")
    drawn = ("() => { const d = document.querySelector('#parcoords-chart');"
             " return d && d.data && d.data.length; }")
    try:
        import httpx

        for _ in range(100):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/ui/login")
            page.fill("#token", ADMIN)
            page.click("#login-submit")
            page.wait_for_selector("#experiments-table tbody tr")
            times = []
            for _ in range(2):
                t = time.perf_counter()
                page.goto(f"{base}/ui/experiments/{eid}")
                page.wait_for_function(ready, timeout=60_000)
                usable = time.perf_counter() - t
                page.locator("#parcoords-chart").scroll_into_view_if_needed()
                page.wait_for_function(drawn, timeout=60_000)
                marks = page.evaluate(
                    "() => Object.fromEntries(performance.getEntriesByType('mark')"
                    ".filter(m => m.name.startsWith('tuner:'))"
                    ".map(m => [m.name.slice(6), Math.round(m.startTime)]))")
                times.append((usable, marks))
            page.screenshot(path=str(ROOT / "test-artifacts" / "bench-experiment.png"))
            browser.close()
        return times
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--reports", type=int, default=50)
    parser.add_argument(
        "--db", default=str(Path(tempfile.gettempdir()) / "tuner-dashboard-bench.db"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time the page in Chromium")
    args = parser.parse_args()
    url = f"sqlite:///{args.db}"
    eid = build(url, args.trials, args.reports)
    load = os.getloadavg()
    rows = time_requests(url, eid, args.repeat)
    print(f"\nload average before: {load[0]:.2f}, after: {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs)")
    print(f"{'request':<66} {'cold ms':>8} {'cold cpu':>8} {'median ms':>10} {'KiB':>7}")
    for path, cold, cpu, warm, size in rows:
        print(f"{path:<66} {cold:8.1f} {cpu:8.1f} {warm:10.1f} {size / 1024:7.1f}")
    worst = max(max(c, w) for _, c, _, w, _ in rows)
    print(f"slowest: {worst:.1f} ms (target < 300 ms): {'OK' if worst < 300 else 'TOO SLOW'}")
    if args.browser:
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        for label, (seconds, marks) in zip(["first visit", "revisit"], time_browser(url, eid),
                                           strict=True):
            steps = ", ".join(f"{k} {v} ms" for k, v in marks.items())
            print(f"experiment page usable ({label}): {seconds * 1000:.0f} ms "
                  f"(target < 2000 ms); milestones: {steps}")


if __name__ == "__main__":
    main()
