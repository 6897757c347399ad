"""Real servers and real workers under faults: what ``bench/faults.py`` and ``bench/soak.py``
share.

A :class:`Fleet` starts one or more uvicorn processes on one database (a scratch PostgreSQL
database, or a SQLite file), makes a worker token, starts worker processes
(``bench/trainer.py``), keeps a few small experiments running (a new one when one ends),
injects faults on a timer and, at the end, drains: no more faults, every experiment runs to
its end, the workers exit. Every process it starts is stopped on every way out (the
``with`` block, ``atexit``, Ctrl-C, SIGTERM): servers with SIGTERM then SIGKILL, workers with
SIGCONT then SIGKILL; and if the bench itself is killed, the kernel kills them
(``PR_SET_PDEATHSIG``).

Faults (:data:`FAULTS`): ``kill_worker`` (SIGKILL of a worker process that holds a job; a
new one replaces it), ``zombie`` (SIGSTOP of a busy worker for longer than a lease plus a
reaper pass, then SIGCONT: its later calls must be refused), ``kill_server`` (SIGKILL of a
server process, restarted on the same port half a second later), ``pg_terminate`` (every
PostgreSQL connection of the service terminated with ``pg_terminate_backend``). The
client-side faults (duplicated, reordered, late and answer-dropped calls) are the workers'
own (``bench/trainer.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
ADMIN_TOKEN = "faults-admin-token"
DEFAULT_POSTGRES = os.environ.get(
    "TUNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
) or "postgresql+psycopg://postgres@127.0.0.1:5432/test"

FAULTS = ("kill_worker", "zombie", "kill_server", "pg_terminate")
#: Client-side faults, injected by the workers themselves (bench/trainer.py).
CLIENT_FAULTS = ("dup", "reorder", "late", "drop")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (psutil if installed, else /proc)."""
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process(pid).memory_info().rss // 1024)
    except ImportError:
        pass
    except Exception:  # a process that is gone has no memory
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# ---- processes ---------------------------------------------------------------------------
def die_with_parent() -> None:
    """In a child before it execs (Linux): SIGKILL it when the bench process dies, even by
    SIGKILL, when no ``finally`` or ``atexit`` runs."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Reaper:
    """Every process this module starts, stopped on the way out, whatever the way out is."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], bool]] = []
        self.lock = threading.Lock()
        atexit.register(self.stop_all)

    def add(self, proc: subprocess.Popen[bytes], *, gentle: bool) -> None:
        with self.lock:
            self.procs.append((proc, gentle))

    def stop_all(self) -> None:
        with self.lock:
            procs, self.procs = self.procs, []
        for proc, gentle in procs:
            stop_process(proc, gentle=gentle)


def stop_process(proc: subprocess.Popen[bytes], *, gentle: bool, wait_s: float = 10.0) -> None:
    """SIGTERM then SIGKILL (``gentle``), or SIGCONT and SIGKILL at once."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if gentle:
            proc.terminate()
            try:
                proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                pass
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait_s)


REAPER = Reaper()


class Server:
    """``uvicorn api.main:create_app --factory`` in a subprocess, on a fixed port."""

    def __init__(self, name: str, db_url: str, log: Path, source: Path,
                 env: dict[str, str]) -> None:
        self.name, self.db_url, self.log, self.source = name, db_url, log, source
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TUNER_DATABASE_URL": db_url, "TUNER_ADMIN_TOKEN": ADMIN_TOKEN,
                    "TUNER_LOG_LEVEL": "WARNING", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts: list[tuple[float, int | None]] = []  # (when, RSS KiB just after start)
        self.kills = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 90.0) -> float:
        """Start and wait for /healthz; the seconds it took."""
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                 "--log-level", "warning"],
                cwd=self.source, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        REAPER.add(self.proc, gentle=True)
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    self.starts.append((time.time(), rss_kib(self.proc.pid)))
                    return time.monotonic() - t0
            time.sleep(0.1)
        stop_process(self.proc, gentle=False)
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.alive:
            self.proc.kill()
            self.proc.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, gentle=True)

    def rss(self) -> int | None:
        return rss_kib(self.proc.pid) if self.alive and self.proc else None


@dataclass
class WorkerProc:
    """One worker process (``bench/trainer.py``) and the worker names it runs."""

    index: int
    names: list[str]
    proc: subprocess.Popen[bytes]
    log: Path
    stopped_at: float | None = None  # SIGSTOP in force since

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


# ---- databases ---------------------------------------------------------------------------
def scratch_postgres(base_url: str, name: str) -> str:
    """A fresh database ``name`` on the server of ``base_url``; its URL."""
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def terminate_backends(db_url: str) -> int:
    """``pg_terminate_backend`` on every connection to ``db_url``'s database but this one."""
    url = make_url(db_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            n = conn.execute(
                text("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                     "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
                {"db": url.database},
            ).scalar()
    finally:
        admin.dispose()
    return int(n or 0)


def read_engine(db_url: str) -> Engine:
    """An engine for the bench's own reads (pre-ping: the faults terminate its connections)."""
    return create_engine(db_url, pool_pre_ping=True, pool_size=2, max_overflow=0)


# ---- the run -----------------------------------------------------------------------------
@dataclass
class FleetConfig:
    """One run: where, how many, how fast, and which faults."""

    label: str
    database: str  # "postgres" or "sqlite"
    replicas: int = 1
    faults: tuple[str, ...] = FAULTS
    fault_every_s: float = 5.0
    seconds: float = 60.0
    drain_s: float = 90.0
    worker_processes: int = 6
    workers_per_process: int = 1
    concurrent_experiments: int = 2
    max_trials: int = 12
    eta: int = 3
    min_resource: int = 1
    max_resource: int = 9
    lease_ttl_s: float = 4.0
    max_retries: int = 3
    reaper_interval_s: float = 0.5
    step_s: float = 0.25
    heartbeat_s: float = 1.0
    checkpoint_every: int = 3
    p_dup: float = 0.05
    p_reorder: float = 0.05
    p_drop: float = 0.05
    per_job_values: bool = True
    seed: int = 0
    postgres: str = DEFAULT_POSTGRES
    source: Path = ROOT
    #: Cancel what is still running when the run ends (the soak's long experiments).
    cancel_at_end: bool = False
    progress_every_s: float = 5.0
    server_env: dict[str, str] = field(default_factory=dict)

    def document(self, number: int) -> dict[str, Any]:
        """The experiment document of the run's ``number``-th experiment."""
        return {
            "name": f"{self.label}-{number}",
            "metric": "loss",
            "mode": "min",
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
                      "width": {"type": "int", "low": 1, "high": 512}},
            "scheduler": {"type": "asha", "form": "promotion", "eta": self.eta,
                          "min_resource": self.min_resource, "max_resource": self.max_resource},
            "budget": {"max_trials": self.max_trials},
            "lease_ttl_s": self.lease_ttl_s,
            "max_retries": self.max_retries,
            "seed": self.seed * 1000 + number,
        }


class Fleet:
    """Servers, workers and experiments of one run, with the faults injected into them.

    ``events`` lists every fault injected (``kind``, ``t`` and what it hit); ``samples`` the
    servers' RSS over time. Use as a context manager: leaving it stops every process.
    """

    def __init__(self, cfg: FleetConfig, workdir: Path,
                 say: Callable[[str], None] = print) -> None:
        self.cfg, self.workdir, self.say = cfg, workdir, say
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stop_file = workdir / "workers.stop"
        self.servers: list[Server] = []
        self.workers: list[WorkerProc] = []
        self.events: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.experiments: list[int] = []
        self.pending: list[tuple[float, Callable[[], None]]] = []
        self.n_names = 0
        self.fault_index = 0
        self.server_kills = 0  # the replica each server kill hits, in turn
        self.token = ""
        self.db_url = ""
        self.engine: Engine | None = None
        self.http = httpx.Client(timeout=30.0, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        self.started_at = 0.0

    # -- set up and tear down --
    def __enter__(self) -> Fleet:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.database == "postgres":
            self.db_url = scratch_postgres(cfg.postgres, f"tuner_{cfg.label.replace('-', '_')}")
        else:
            self.db_url = f"sqlite:///{self.workdir / 'tuner.db'}"
        env = {"TUNER_REAPER_INTERVAL_S": str(cfg.reaper_interval_s), **cfg.server_env}
        for i in range(cfg.replicas):
            server = Server(f"server{i}", self.db_url, self.workdir / f"server{i}.log",
                            cfg.source, env)
            self.servers.append(server)
            took = server.start()  # one at a time: each upgrades the schema first
            self.say(f"[{cfg.label}] {server.name} up on :{server.port} in {took:.1f} s")
        self.engine = read_engine(self.db_url)
        answer = self.request("POST", "/api/v1/tokens", {"role": "worker", "name": "faults"})
        self.token = answer["token"]
        for _ in range(cfg.worker_processes):
            self.spawn_workers()

    def close(self) -> None:
        for w in self.workers:
            stop_process(w.proc, gentle=False, wait_s=5)
        for s in self.servers:
            s.stop()
        self.http.close()
        if self.engine is not None:
            self.engine.dispose()

    def spawn_workers(self) -> WorkerProc:
        cfg = self.cfg
        index = len(self.workers)
        names = [f"w{self.n_names + i}" for i in range(cfg.workers_per_process)]
        self.n_names += len(names)
        log = self.workdir / f"worker{index}.jsonl"
        urls = [s.url for s in self.servers]
        # Each process starts on its own replica; on a connection error it moves on.
        urls = urls[index % len(urls):] + urls[: index % len(urls)]
        opts = {
            "urls": urls, "token": self.token, "names": names, "log": str(log),
            "stop_file": str(self.stop_file), "seed": cfg.seed * 100_003 + index,
            "step_s": cfg.step_s, "checkpoint_every": cfg.checkpoint_every,
            "heartbeat_s": cfg.heartbeat_s, "lease_ttl_s": cfg.lease_ttl_s,
            "p_dup": cfg.p_dup, "p_reorder": cfg.p_reorder, "p_drop": cfg.p_drop,
            "per_job_values": cfg.per_job_values,
        }
        with (self.workdir / f"worker{index}.err").open("ab") as err:
            proc = subprocess.Popen([sys.executable, str(BENCH / "trainer.py"), json.dumps(opts)],
                                    cwd=ROOT, stdout=err, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)
        REAPER.add(proc, gentle=False)
        worker = WorkerProc(index, names, proc, log)
        self.workers.append(worker)
        return worker

    # -- the admin's HTTP calls, failing over between replicas --
    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                attempts: int = 60) -> Any:
        last = ""
        for i in range(attempts):
            server = self.servers[i % len(self.servers)]
            if not server.alive:
                time.sleep(0.25)
                continue
            try:
                r = self.http.request(method, server.url + path, json=body)
            except httpx.HTTPError as exc:
                last = repr(exc)
                time.sleep(0.25)
                continue
            if r.status_code < 300:
                return r.json() if r.content else None
            last = f"{r.status_code} {r.text[:300]}"
            if r.status_code < 500:
                break
            time.sleep(0.25)
        raise RuntimeError(f"{method} {path} failed: {last}")

    def query(self, sql: str, **params: Any) -> list[Any]:
        if self.engine is None:
            raise RuntimeError("the fleet is not set up")
        for attempt in range(5):
            try:
                with self.engine.connect() as conn:
                    return list(conn.execute(text(sql), params))
            except Exception:  # a terminated connection: try a fresh one
                if attempt == 4:
                    raise
                time.sleep(0.2)
        return []

    # -- the run --
    def run(self) -> None:
        cfg = self.cfg
        self.started_at = time.time()
        deadline = time.monotonic() + cfg.seconds
        next_fault = time.monotonic() + min(cfg.fault_every_s, 3.0)
        retry_at = 0.0
        next_progress = time.monotonic() + cfg.progress_every_s
        self.sample_rss("start")
        while time.monotonic() < deadline:
            self.feed()
            self.run_due()
            if cfg.faults and time.monotonic() >= max(next_fault, retry_at):
                kind = cfg.faults[self.fault_index % len(cfg.faults)]
                if self.inject(kind, may_wait=time.monotonic() < next_fault + 10):
                    self.fault_index += 1
                    next_fault += cfg.fault_every_s
                else:  # nobody holds a job right now: try again in a second
                    retry_at = time.monotonic() + 1.0
            if time.monotonic() >= next_progress:
                self.progress()
                next_progress += cfg.progress_every_s
            time.sleep(0.2)
        self.drain()

    def feed(self) -> None:
        """Keep ``concurrent_experiments`` experiments running."""
        running = self.query("SELECT count(*) FROM experiments WHERE state IN ('running', "
                             "'paused')")[0][0]
        for _ in range(self.cfg.concurrent_experiments - running):
            try:
                out = self.request("POST", "/api/v1/experiments",
                                   self.cfg.document(len(self.experiments)), attempts=4)
            except RuntimeError as exc:
                self.say(f"[{self.cfg.label}] could not create an experiment yet: {exc}")
                return
            self.experiments.append(out["id"])

    def run_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = [a for a in self.pending if everything or a[0] <= now]
        self.pending = [a for a in self.pending if a not in due]
        for _, action in due:
            action()

    def busy_workers(self) -> list[WorkerProc]:
        """Live, running worker processes that hold a job, most jobs first."""
        rows = self.query("SELECT worker_id, count(*) FROM jobs WHERE state = 'leased' "
                          "GROUP BY worker_id")
        held = {r[0]: r[1] for r in rows}
        found = [(sum(held.get(n, 0) for n in w.names), w) for w in self.workers
                 if w.alive and w.stopped_at is None]
        return [w for n, w in sorted(found, key=lambda x: -x[0]) if n > 0]

    def inject(self, kind: str, may_wait: bool = False) -> bool:
        """Inject one fault; False (nothing done, nothing recorded) when it needs a busy
        worker, none is busy, and ``may_wait``."""
        event: dict[str, Any] = {"kind": kind, "t": time.time()}
        if kind in ("kill_worker", "zombie"):
            busy = self.busy_workers()
            if not busy and may_wait:
                return False
            if not busy:
                event["skipped"] = "no busy worker"
            else:
                w = busy[0]
                event.update(process=w.index, names=w.names, pid=w.proc.pid)
                if kind == "kill_worker":
                    w.proc.kill()
                    w.proc.wait(10)
                    self.spawn_workers()
                else:
                    w.proc.send_signal(signal.SIGSTOP)
                    w.stopped_at = event["stop_t"] = time.time()
                    pause_s = self.cfg.lease_ttl_s + 2 * self.cfg.reaper_interval_s + 1.5
                    event["pause_s"] = pause_s

                    def wake(w: WorkerProc = w, event: dict[str, Any] = event) -> None:
                        with contextlib.suppress(ProcessLookupError):
                            w.proc.send_signal(signal.SIGCONT)
                        event["cont_t"] = time.time()
                        w.stopped_at = None

                    self.pending.append((time.monotonic() + pause_s, wake))
        elif kind == "kill_server":
            alive = [s for s in self.servers if s.alive]
            if not alive:
                event["skipped"] = "no server up"
            else:
                server = alive[self.server_kills % len(alive)]
                self.server_kills += 1
                server.kill()
                event.update(server=server.name)

                def restart(server: Server = server, event: dict[str, Any] = event) -> None:
                    try:
                        event["restart_s"] = server.start()
                        event["up_t"] = time.time()
                    except RuntimeError as exc:
                        event["restart_error"] = str(exc)[-500:]

                self.pending.append((time.monotonic() + 0.5, restart))
        elif kind == "pg_terminate":
            if self.cfg.database != "postgres":
                event["skipped"] = "not PostgreSQL"
            else:
                event["terminated"] = terminate_backends(self.db_url)
        self.events.append(event)
        detail = {k: v for k, v in event.items() if k not in ("kind", "t", "names")}
        self.say(f"[{self.cfg.label}] t={event['t'] - self.started_at:5.1f}s fault {kind} "
                 f"{detail}")
        return True

    def sample_rss(self, when: str) -> None:
        self.samples.append({"when": when, "t": time.time(),
                             **{s.name: s.rss() for s in self.servers}})

    def progress(self) -> None:
        row = self.query(
            "SELECT (SELECT count(*) FROM experiments WHERE state = 'completed'),"
            " (SELECT count(*) FROM experiments), (SELECT count(*) FROM trials),"
            " (SELECT count(*) FROM trials WHERE state IN ('completed', 'stopped', 'failed',"
            " 'cancelled')), (SELECT count(*) FROM reports),"
            " (SELECT count(*) FROM jobs WHERE state = 'expired')"
        )[0]
        self.sample_rss("progress")
        rss = " ".join(f"{k}={v // 1024 if v else '-'}MiB" for k, v in self.samples[-1].items()
                       if k.startswith("server"))
        self.say(f"[{self.cfg.label}] t={time.time() - self.started_at:5.1f}s experiments "
                 f"{row[0]}/{row[1]} done, trials {row[3]}/{row[2]} final, reports {row[4]}, "
                 f"leases expired {row[5]}, RSS {rss}")

    def drain(self) -> None:
        """No more faults: wake, restart, and wait until every experiment ended."""
        self.run_due(everything=True)
        for s in self.servers:
            if not s.alive:
                s.start()
        for w in self.workers:
            if w.alive and w.stopped_at is not None:
                w.proc.send_signal(signal.SIGCONT)
                w.stopped_at = None
        if self.cfg.cancel_at_end:
            for eid in self.experiments:
                with contextlib.suppress(RuntimeError):
                    self.request("POST", f"/api/v1/experiments/{eid}/cancel", attempts=4)
        self.say(f"[{self.cfg.label}] draining: no more faults or experiments")
        deadline = time.monotonic() + self.cfg.drain_s
        while time.monotonic() < deadline:
            left = self.query("SELECT count(*) FROM experiments WHERE state IN ('running', "
                              "'paused')")[0][0]
            if left == 0:
                break
            time.sleep(0.5)
        else:
            self.say(f"[{self.cfg.label}] drain timed out after {self.cfg.drain_s:.0f} s")
        self.sample_rss("end")
        self.stop_file.touch()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(w.alive for w in self.workers):
            time.sleep(0.2)
        for w in self.workers:
            stop_process(w.proc, gentle=False, wait_s=5)

    def summary(self) -> dict[str, Any]:
        return {"config": {k: str(v) if isinstance(v, Path) else v
                           for k, v in asdict(self.cfg).items()},
                "events": self.events, "samples": self.samples,
                "servers": {s.name: {"starts": s.starts, "kills": s.kills}
                            for s in self.servers}}


@contextlib.contextmanager
def interrupt_as_exception() -> Iterator[None]:
    """SIGTERM behaves as Ctrl-C does (KeyboardInterrupt), so the ``finally`` blocks and
    ``atexit`` stop what was started."""
    def raise_interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def save_run(say: Callable[[str], None], workdir: Path, name: str, summary: Any, ok: bool,
             keep: Path | None) -> None:
    """Write the run's JSON summary to ``workdir/name``; delete the logs of a clean run
    unless they were asked for (``keep``), else say where they are."""
    (workdir / name).write_text(json.dumps(summary, indent=1, default=str))
    if ok and keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"logs and {name} in {workdir}")


def verdict(say: Callable[[str], None], ok: bool) -> int:
    """Say how the run ended; its exit code."""
    say("[green]all invariants held[/green]" if ok else "[red]an invariant failed[/red]")
    return 0 if ok else 1
