"""The worker agent: claim jobs, run the user's command for each, keep the lease alive, and
report how the command ended.

One slot per GPU (``CUDA_VISIBLE_DEVICES=<i>``) or per CPU slot; each slot is a thread that
loops claim (long poll) → start the command with the job in ``TUNER_*`` variables →
heartbeat and relay output while it runs → complete or fail. The command is killed as a
process group (SIGTERM, SIGKILL after ``grace_s``) on a ``stop`` answer, a lost lease, or
the agent's own shutdown. Network errors and server restarts are waited out with jittered
exponential backoff; only a refused token ends the agent.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.agent.gpus import Gpu, read_gpu_stats
from tuner.agent.lines import (
    Lines,
    Outcome,
    Write,
    exit_code_text,
    slot_name,
    tail_lines,
)
from tuner.agent.outcomes import complete, fail, judged, release
from tuner.agent.process import TrialProcess
from tuner.client import Client, RetryPolicy
from tuner.client.job import heartbeat_interval_s
from tuner.domain import DecisionKind
from tuner.errors import (
    AuthError,
    ClientError,
    ConflictError,
    NotFound,
    TunerError,
)
from tuner.wire import WORKER_REPORT_EVERY_S, DecisionOut, JobOut

log = logging.getLogger(__name__)

#: Lines of output sent with ``fail``.
FAIL_TAIL_LINES = 60
#: How often a slot looks at its process, the stop flag and the heartbeat clock.
TICK_S = 0.1
#: Heartbeats are not repeated inside one beat: the next beat is the retry, and the slot
#: keeps watching its process (and the stop flag) meanwhile.
ONCE = RetryPolicy(attempts=1)


@dataclass
class AgentConfig:
    """What ``tuner worker`` was asked to do.

    ``experiment_id`` None: claim from any running experiment (``POST /api/v1/claims``).
    ``exit_when_done``: leave once the experiment(s) served are over: with an experiment,
    when its claims answer 410; without one, when claims answer 410 or, after a 204, no
    experiment is running or paused any more while at least one exists (all of them are
    completed or cancelled).
    """

    command: Sequence[str]
    experiment_id: int | None = None
    gpus: Sequence[Gpu] = ()
    slots: int = 1
    checkpoint_root: Path = Path("tuner-checkpoints")
    exit_when_done: bool = False
    grace_s: float = 10.0
    claim_wait_s: float = 10.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    cwd: str | None = None
    echo_output: bool = False
    quiet: bool = False  # no job lines (the start and exit lines stay)
    report_every_s: float = WORKER_REPORT_EVERY_S  # registering again: GPU use, jobs done


class Backoff:
    """Jittered exponential delays, reset by a success."""

    def __init__(self, base_s: float = 0.5, max_s: float = 5.0) -> None:
        self.base_s, self.max_s, self.failures = base_s, max_s, 0
        self._rng = random.Random()

    def next_delay_s(self) -> float:
        delay = min(self.max_s, self.base_s * 2**self.failures)
        self.failures += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


class Agent:
    """Runs the slots until the work is done or :meth:`shutdown` is called.

    ``write`` receives the lines a person reads (:mod:`tuner.agent.lines`); None: silent.
    """

    def __init__(self, client: Client, config: AgentConfig, write: Write | None = None) -> None:
        self.client = client
        self.config = config
        self.stopping = threading.Event()
        self.fatal: str | None = None
        self.exit_reason: str | None = None  # why it leaves, said once, by the first to know
        self.lines = Lines(write, quiet=config.quiet)
        self._seen_experiment = False
        self._output_route = True
        self._lock = threading.Lock()
        self._done_slots = 0
        self._jobs_done = 0
        self._said_over = False
        self._states: dict[int, str] = {}  # the experiments' states as last said

    # ---- life cycle ---------------------------------------------------------------------
    def slot_devices(self) -> list[str | None]:
        """One entry per slot: a GPU index, or None for a CPU slot."""
        if self.config.gpus:
            return [gpu.index for gpu in self.config.gpus]
        return [None] * max(1, self.config.slots)

    def run(self) -> int:
        """Register, run every slot, and answer the exit code (0, or 1 after a fatal error)."""
        devices = self.slot_devices()
        self.lines.agent_started(
            self.client.url,
            self.config.worker_id,
            self.config.experiment_id,
            [slot_name(i, device) for i, device in enumerate(devices)],
        )
        if not self._register(len(devices)):
            self._exit_line()
            return 1 if self.fatal else 0
        threads = [
            threading.Thread(target=self._slot, args=(i, device), name=f"tuner-slot-{i}")
            for i, device in enumerate(devices)
        ]
        for thread in threads:
            thread.start()
        next_report = time.monotonic() + self.config.report_every_s
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.2)
            if time.monotonic() >= next_report and not self.stopping.is_set():
                self._report(len(devices))  # GPU use, jobs done, and "still here"
                for experiment_id in self._watched():
                    self._say_state(experiment_id)
                next_report = time.monotonic() + self.config.report_every_s
        if not self.fatal or not self.fatal.startswith("the server refused the token"):
            self._report(len(devices), exiting=True)
        self._exit_line()
        if self.fatal:
            log.info("event=agent_exit reason=%r", self.fatal)
            return 1
        return 0

    def shutdown(self, why: str = "asked to stop") -> None:
        """Stop claiming; running commands are terminated and their jobs released."""
        self._leave(why)
        self.stopping.set()

    def _leave(self, why: str) -> None:
        with self._lock:
            if self.exit_reason is None:
                self.exit_reason = why

    def _exit_line(self) -> None:
        # A fatal error is the caller's to show (``fatal``; the CLI prints it as an error).
        self.lines.agent_exits(self.exit_reason or "nothing left to do", error=bool(self.fatal))

    def _send_registration(
        self, n_slots: int, *, exiting: bool = False, retry: RetryPolicy | None = None
    ) -> None:
        self.client.register_worker(
            self.config.worker_id,
            host=socket.gethostname(),
            gpus=[gpu.describe() for gpu in self.config.gpus],
            cpus=os.cpu_count(),
            slots=n_slots,
            gpu_stats=read_gpu_stats(self.config.gpus),
            jobs_done=self._jobs_done,
            exiting=exiting,
            retry=retry,
        )

    def _report(self, n_slots: int, *, exiting: bool = False) -> None:
        """Register again: once, with no retry (the next report is the retry)."""
        try:
            self._send_registration(n_slots, exiting=exiting, retry=ONCE)
        except TunerError as exc:
            log.info("event=report_failed detail=%s", exc)

    def _register(self, n_slots: int) -> bool:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                self._send_registration(n_slots)
                log.info("event=registered worker_id=%s slots=%d", self.config.worker_id, n_slots)
                return True
            except AuthError as exc:
                self.fatal = f"the server refused the token: {exc.detail}"
                return False
            except NotFound as exc:
                log.warning("event=register_unavailable detail=%s", exc.detail)
                return True
            except TunerError as exc:
                delay = backoff.next_delay_s()
                log.warning("event=register_retry delay_s=%.1f detail=%s", delay, exc)
                self.stopping.wait(delay)
        return False

    # ---- one slot -----------------------------------------------------------------------
    def _slot(self, index: int, device: str | None) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                answer = self.client.claim(
                    self.config.experiment_id,
                    worker_id=self.config.worker_id,
                    wait_s=self.config.claim_wait_s,
                )
            except AuthError as exc:
                self._die(f"the server refused the token: {exc.detail}")
                return
            except NotFound as exc:
                self._die(exc.detail)
                return
            except TunerError as exc:
                delay = backoff.next_delay_s()
                log.warning("event=claim_retry slot=%d delay_s=%.1f detail=%s", index, delay, exc)
                self.stopping.wait(delay)
                continue
            backoff.reset()
            if answer.over:
                if self._over(index):
                    return
                continue
            if answer.job is None:
                if self.config.exit_when_done and self._nothing_left():
                    log.info("event=done slot=%d reason=no_running_experiment", index)
                    self._leave("no experiment is running or paused any more")
                    return
                continue
            self._seen_experiment = True
            if self.stopping.is_set():
                release(self.client, answer.job)
                return
            self._run_job(answer.job, device, slot_name(index, device))

    def _die(self, message: str) -> None:
        self.fatal = message
        self.stopping.set()

    def _over(self, index: int) -> bool:
        """A 410: leave (``--exit-when-done``) or idle until shut down."""
        served = self.config.experiment_id
        over = f"experiment {served} is over" if served is not None else "the experiments are over"
        if self.config.exit_when_done:
            log.info("event=done slot=%d reason=experiment_over", index)
            self._leave(over)
            return True
        log.info("event=experiment_over slot=%d note=waiting", index)
        with self._lock:
            said, self._said_over = self._said_over, True
        if not said:
            self.lines.note(f"{over}; waiting for work (--exit-when-done would leave now)")
        self.stopping.wait(max(self.config.claim_wait_s, 1.0))
        return False

    def _nothing_left(self) -> bool:
        """Without ``--experiment``: no experiment is running or paused, and one exists."""
        if self.config.experiment_id is not None:
            return False
        try:
            active = sum(
                self.client.list_experiments(state=state, limit=1).total
                for state in ("running", "paused")
            )
            if active:
                self._seen_experiment = True
                return False
            return self._seen_experiment or self.client.list_experiments(limit=1).total > 0
        except TunerError as exc:
            log.info("event=list_failed detail=%s", exc)
            return False

    # ---- one job ------------------------------------------------------------------------
    def job_env(self, job: JobOut, device: str | None, checkpoint_dir: Path) -> dict[str, str]:
        """The environment of the command: the agent's own plus the job's ``TUNER_*``."""
        env = dict(os.environ)
        env.update(
            {
                "TUNER_URL": self.client.url,
                "TUNER_TOKEN": self.client.token or "",
                "TUNER_JOB_ID": str(job.job_id),
                "TUNER_LEASE_TOKEN": job.lease_token,
                "TUNER_PARAMS": json.dumps(job.params),
                "TUNER_FROM_RESOURCE": str(job.from_resource),
                "TUNER_TO_RESOURCE": str(job.to_resource),
                "TUNER_RUNG": str(job.rung),
                "TUNER_BRACKET": str(job.bracket),
                "TUNER_CHECKPOINT_DIR": str(checkpoint_dir),
                "TUNER_CHECKPOINT": job.checkpoint or "",
                "TUNER_EXPERIMENT_ID": str(job.experiment_id),
                "TUNER_TRIAL_ID": str(job.trial_id),
                "TUNER_TRIAL_NUMBER": str(job.trial_number),
                "TUNER_METRIC": job.metric,
                "TUNER_MODE": job.mode,
                "TUNER_AGENT_PID": str(os.getpid()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        # A CPU slot hides the GPUs, so that `--gpus none` means none.
        env["CUDA_VISIBLE_DEVICES"] = device if device is not None else ""
        return env

    def _run_job(self, job: JobOut, device: str | None, slot: str = "slot 0") -> None:
        """Run the command for ``job``; one line when it starts, one when it ends."""
        self.lines.job_started(job, slot)
        started = time.monotonic()
        outcome = self._run_command(job, device)
        with self._lock:
            self._jobs_done += 1
        self.lines.job_ended(job, slot, outcome, time.monotonic() - started)
        if outcome.kind == "failed":  # the service pauses an experiment whose jobs all fail
            self._say_state(job.experiment_id)

    def _watched(self) -> list[int]:
        """The experiments whose state the agent says: the one it serves, or those it has
        said are paused."""
        if self.config.experiment_id is not None:
            return [self.config.experiment_id]
        with self._lock:
            return [e for e, state in self._states.items() if state != "running"]

    def _say_state(self, experiment_id: int) -> None:
        """Say when an experiment it serves was paused (by hand, or by the service after a
        run of failures) and when it runs again: claims only answer "nothing now"."""
        try:
            info = self.client.get_experiment(experiment_id)
        except TunerError as exc:
            log.info("event=experiment_read_failed experiment_id=%d detail=%s", experiment_id, exc)
            return
        with self._lock:
            before = self._states.get(experiment_id, "running")
            self._states[experiment_id] = info.state
        if info.state == before:
            return
        if info.state == "paused" and info.state_reason and self._leaves_on_failures():
            # The service paused it: its jobs failed, and this worker's command is what
            # fails. Waiting would keep a worker that only exits when the experiment is over
            # waiting forever for a resume that needs a fixed command first.
            self._die(
                f"experiment {experiment_id} {info.state_reason}; this worker leaves "
                "(--exit-when-done): start it again with the fixed command after "
                f"`tuner resume {experiment_id}`"
            )
        elif info.state == "paused":
            why = info.state_reason or "paused by hand"
            self.lines.note(
                f"experiment {experiment_id} {why}; the worker waits for it to resume "
                f"(`tuner resume {experiment_id}`)"
            )
        elif info.state == "running":
            self.lines.note(f"experiment {experiment_id} is running again")

    def _leaves_on_failures(self) -> bool:
        """A worker for one experiment with ``--exit-when-done`` leaves when the service
        pauses that experiment after a run of failed jobs (``pause_after_failures``)."""
        return self.config.exit_when_done and self.config.experiment_id is not None

    def _run_command(self, job: JobOut, device: str | None) -> Outcome:
        checkpoint_dir = (
            self.config.checkpoint_root / str(job.experiment_id) / str(job.trial_number)
        ).absolute()
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        fields = f"experiment_id={job.experiment_id} trial_id={job.trial_id} job_id={job.job_id}"
        log.info(
            "event=job_start %s resource=%d->%d device=%s",
            fields,
            job.from_resource,
            job.to_resource,
            device,
        )
        echo = _echo_line if self.config.echo_output else None
        try:
            process = TrialProcess(
                self.config.command,
                self.job_env(job, device, checkpoint_dir),
                cwd=self.config.cwd,
                echo=echo,
            )
        except OSError as exc:
            error = f"cannot start {list(self.config.command)!r}: {exc}"
            return fail(self.client, job, error, f"failed: the command could not start ({exc})")
        ended_by, answer = self._watch(job, process)
        code = process.wait()
        process.finish_output()
        self._send_output(job, process)
        log.info("event=job_end %s rc=%s ended_by=%s", fields, code, ended_by)
        if ended_by == "shutdown":
            return release(self.client, job)
        if ended_by == "lease_lost":
            return Outcome("lost", f"lease lost, the command was ended: {answer}")
        if isinstance(answer, DecisionOut):  # stopped (by hand, cancelled, or it had ended)
            return judged(self.client, job, answer)
        tail = process.tail(FAIL_TAIL_LINES)
        if code == 0:
            return complete(self.client, job, tail)
        return fail(
            self.client,
            job,
            f"the command exited with code {code}\n" + tail,
            f"failed: the command ended with {exit_code_text(code)}",
            tail_lines(tail),
        )

    def _watch(self, job: JobOut, process: TrialProcess) -> tuple[str | None, Any]:
        """Heartbeat and relay output until the process ends: why the agent ended it
        (``shutdown``, ``stop``, ``lease_lost`` or None) and what the server said (the
        stop's :class:`DecisionOut`, the lease error's detail)."""
        interval = heartbeat_interval_s(job.lease_expires_at)
        next_beat = time.monotonic() + interval
        beating = True
        while process.poll() is None:
            if self.stopping.is_set():
                process.terminate(self.config.grace_s)
                return "shutdown", None
            if beating and time.monotonic() >= next_beat:
                self._send_output(job, process)
                verdict, answer = self._heartbeat(job)
                next_beat = time.monotonic() + interval
                if verdict in ("stop", "lease_lost"):
                    log.info("event=terminate job_id=%d reason=%s", job.job_id, verdict)
                    process.terminate(self.config.grace_s)
                    return verdict, answer
                beating = verdict == "continue"
            process.wait(TICK_S)
        return None, None

    def _heartbeat(self, job: JobOut) -> tuple[str, Any]:
        """``continue``, ``stop``, ``settled`` (the script completed) or ``lease_lost``,
        with the answer (a DecisionOut, or the refusal's detail); ``continue`` too when the
        server cannot be reached (retry at the next beat)."""
        try:
            out = self.client.job_call(
                job.job_id, "heartbeat", {"lease_token": job.lease_token}, retry=ONCE
            )
        except (ConflictError, NotFound) as exc:
            log.info("event=lease_lost job_id=%d detail=%s", job.job_id, exc.detail)
            return "lease_lost", exc.detail
        except TunerError as exc:
            log.warning("event=heartbeat_failed job_id=%d detail=%s", job.job_id, exc)
            return "continue", None
        kind = DecisionKind(out.decision)
        if kind is DecisionKind.STOP:
            return "stop", out
        return ("continue" if kind is DecisionKind.CONTINUE else "settled"), out

    def _send_output(self, job: JobOut, process: TrialProcess) -> None:
        text = process.take_unsent()
        if not text or not self._output_route:
            return
        try:
            self.client.post_output(job.job_id, job.lease_token, text[-64_000:])
        except NotFound as exc:
            if "no route" in exc.detail:
                self._output_route = False
                log.warning("event=output_unsupported detail=%s", exc.detail)
        except TunerError as exc:
            log.info("event=output_failed job_id=%d detail=%s", job.job_id, exc)


def _echo_line(line: str) -> None:
    """``--echo``: the command's output on the agent's stdout, whatever the log level."""
    sys.stdout.write(line if line.endswith("\n") else line + "\n")
    sys.stdout.flush()


def run_agent(
    client: Client,
    config: AgentConfig,
    install_signals: Callable[[Agent], None] | None = None,
    write: Write | None = None,
) -> int:
    """Run an agent to the end; ``install_signals`` wires SIGTERM/SIGINT to shutdown."""
    agent = Agent(client, config, write)
    if install_signals is not None:
        install_signals(agent)
    try:
        return agent.run()
    except ClientError as exc:  # pragma: no cover - every call site retries
        log.error("event=agent_exit detail=%s", exc)
        return 1


__all__ = ["Agent", "AgentConfig", "Backoff", "run_agent"]
