"""The quickstart: start a server and worker agents as subprocesses, submit the digits
experiment, show its progress, print the best configuration, and stop what it started."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tuner.client import Client, RetryPolicy
from tuner.domain import TrialState
from tuner.errors import ClientError, TunerError
from tuner.quickstart.experiment import TRAIN_SCRIPT, Budget, experiment_document
from tuner.wire import ExperimentOut

#: Seconds to wait for the server to answer /healthz.
SERVER_START_S = 60.0
#: Seconds a stopping process gets before SIGKILL.
STOP_GRACE_S = 8.0


class QuickstartError(TunerError):
    code = "quickstart_failed"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Started:
    """A subprocess the quickstart owns, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait()
        self.log.close()


@dataclass
class Quickstart:
    """Everything one ``tuner quickstart`` run starts and owns."""

    directory: Path
    workers: int = 2
    budget: Budget = "full"
    port: int | None = None
    console: Console = field(default_factory=Console)
    token: str = field(default_factory=lambda: "tnr_quickstart_" + secrets.token_urlsafe(24))
    processes: list[Started] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Started:
        log = (self.directory / f"{name}.log").open("wb")
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tuner.cli", *args],
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )
        started = Started(name, popen, log)
        self.processes.append(started)
        return started

    def start_server(self) -> None:
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "TUNER_ADMIN_TOKEN": self.token,
            "TUNER_DATABASE_URL": f"sqlite:///{self.directory / 'tuner.db'}",
            "TUNER_REAPER_INTERVAL_S": "1",
        }
        server = self._spawn(
            "server",
            [
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db",
                env["TUNER_DATABASE_URL"],
            ],
            env,
        )
        deadline = time.monotonic() + SERVER_START_S
        with Client(self.url, self.token, timeout_s=2.0, retry=RetryPolicy(attempts=1)) as client:
            while time.monotonic() < deadline:
                if server.popen.poll() is not None:
                    raise QuickstartError(
                        f"the server exited with code {server.popen.returncode}; see "
                        f"{self.directory / 'server.log'}"
                    )
                try:
                    client.health()
                    return
                except TunerError:
                    time.sleep(0.2)
        raise QuickstartError(f"the server did not answer within {SERVER_START_S:.0f} s")

    def start_workers(self, experiment_id: int) -> None:
        env = {**os.environ, "TUNER_URL": self.url, "TUNER_TOKEN": self.token}
        for i in range(self.workers):
            self._spawn(
                f"worker-{i}",
                [
                    "worker",
                    "--experiment",
                    str(experiment_id),
                    "--gpus",
                    "none",
                    "--slots",
                    "1",
                    "--checkpoint-root",
                    str(self.directory / "checkpoints"),
                    "--exit-when-done",
                    "--grace-s",
                    "3",
                    "--poll-s",
                    "5",
                    "--worker-id",
                    f"quickstart-{i}",
                    "--",
                    sys.executable,
                    str(TRAIN_SCRIPT),
                ],
                env,
            )

    def stop_all(self) -> None:
        """Workers first (they fail their jobs cleanly), then the server."""
        workers = [p for p in self.processes if p.name != "server"]
        for process in workers:
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.popen.send_signal(signal.SIGTERM)
        for process in workers:
            process.stop()
        for process in self.processes:
            if process.name == "server":
                process.stop()
        self.processes.clear()

    def run(self) -> ExperimentOut:
        """Start everything, follow the experiment to its end, and answer it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.console.print(f"working folder: {self.directory}")
        self.start_server()
        self.console.print(f"server: {self.url}  (log: {self.directory / 'server.log'})")
        self.console.print(f"dashboard: [bold]{self.url}/ui[/]")
        self.console.print(f"admin token: [bold]{self.token}[/]")
        with Client(self.url, self.token) as client:
            experiment = client.create_experiment(experiment_document(self.budget))
            self.console.print(
                f"submitted experiment {experiment.id} ({experiment.name}): ASHA over "
                f"{experiment.config['budget']['max_trials']} trials, eta 3, up to "
                f"{experiment.config['scheduler']['max_resource']} epochs"
            )
            self.start_workers(experiment.id)
            self.console.print(f"started {self.workers} worker agents")
            return self.follow(client, experiment.id)

    def follow(self, client: Client, experiment_id: int) -> ExperimentOut:
        started = time.monotonic()
        info = client.get_experiment(experiment_id)
        with Live(
            self._progress(info, 0.0), console=self.console, transient=False, refresh_per_second=4
        ) as live:
            while info.state not in ("completed", "cancelled"):
                time.sleep(0.5)
                with contextlib.suppress(ClientError):
                    info = client.get_experiment(experiment_id)
                live.update(self._progress(info, time.monotonic() - started))
                if not any(p.popen.poll() is None for p in self.processes if p.name != "server"):
                    info = client.get_experiment(experiment_id)
                    if info.state not in ("completed", "cancelled"):
                        raise QuickstartError(
                            f"every worker exited before the experiment ended; see "
                            f"{self.directory}/worker-*.log"
                        )
        self.console.print()
        return info

    def _progress(self, info: ExperimentOut, elapsed_s: float) -> Table:
        table = Table(title=f"experiment {info.id}: {info.state}, {elapsed_s:.0f} s", box=None)
        states = ("pending", "running", "paused", "lost", "completed", "stopped", "failed")
        for state in states:
            table.add_column(TrialState(state).word, justify="right")
        table.add_column("best accuracy (epoch)", justify="right")
        counts = info.progress.trials_by_state
        best = info.progress.best
        table.add_row(
            *(str(counts.get(s, 0)) for s in states),
            "-" if best is None or best.value is None else f"{best.value:.4f} ({best.step})",
        )
        return table

    def report(self, info: ExperimentOut) -> dict[str, Any] | None:
        """Print the best trial (the top of the ranking, docs/RESULTS.md): its accuracy at
        the epoch it was ranked at, and its checkpoint with the epoch it was saved at.
        Answer it (params, accuracy, epoch, checkpoint, checkpoint_epoch) or None."""
        with Client(self.url, self.token) as client:
            page = client.list_trials(info.id, order_by="value", limit=1)
        if not page.items or page.items[0].ranked_value is None:
            self.console.print("no trial reached a rung with a value")
            return None
        best = page.items[0]
        self.console.print(
            f"[bold green]best configuration[/] (trial {best.experiment_id}/{best.number}): "
            f"validation accuracy [bold]{best.ranked_value:.4f}[/] at epoch {best.ranked_step}"
            " (the highest rung it reached)"
        )
        if best.best_value is not None and best.best_value != best.ranked_value:
            self.console.print(
                f"  (its best at a lower rung was {best.best_value:.4f}; trials are ranked "
                "by their value at the highest rung they reached)"
            )
        for name, value in best.params.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            self.console.print(f"  {name} = {shown}")
        saved = _saved_at(best.checkpoint, best.checkpoint_step, best.ranked_step)
        self.console.print(f"  checkpoint: {saved}")
        return {
            "params": best.params, "accuracy": best.ranked_value, "epoch": best.ranked_step,
            "checkpoint": best.checkpoint, "checkpoint_epoch": best.checkpoint_step,
        }


def _saved_at(checkpoint: str | None, saved_at: int | None, ranked_at: int | None) -> str:
    """Where the best trial's model is, and whether it is the model that was ranked."""
    if checkpoint is None:
        return "none (the script reported no checkpoint)"
    if saved_at == ranked_at:
        return f"{checkpoint} (saved at epoch {saved_at})"
    return (
        f"{checkpoint} (saved at epoch {saved_at}, not at epoch {ranked_at} where the accuracy "
        "above was measured)"
    )


def default_workers() -> int:
    return max(2, min(4, os.cpu_count() or 2))


def quickstart(
    directory: Path, *, workers: int, budget: Budget, port: int | None, console: Console
) -> int:
    """Run the quickstart; answer the exit code (130 after Ctrl-C)."""
    run = Quickstart(directory.absolute(), workers, budget, port, console)
    interrupted = False
    # A SIGTERM (kill, a CI runner's timeout) stops what the quickstart started, as Ctrl-C
    # does: its server and agents live in their own sessions and would outlive it.
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        info = run.run()
        run.report(info)
        console.print(
            f"the server is stopping; to look again: `tuner server --db "
            f"sqlite:///{run.directory / 'tuner.db'}`"
        )
    except KeyboardInterrupt:
        interrupted = True
        console.print("\ninterrupted: stopping the workers and the server")
    finally:
        # A second Ctrl-C while stopping must not leave processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            run.stop_all()
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
    return 130 if interrupted else 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
