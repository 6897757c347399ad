"""A leased job as the training script sees it: report, complete, fail, and a heartbeat.

The heartbeat runs in a background thread while the job is open (every third of the lease's
time to live) unless the worker agent that started the script does it
(:func:`tuner.client.current_job`). ``should_stop`` turns true when the scheduler answers
``stop``, when the trial is stopped by hand or its experiment cancelled, and when the lease
is lost (another worker owns the job now): the script should then end its training loop.
"""

from __future__ import annotations

import logging
import math
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from tuner.domain import DecisionKind
from tuner.errors import ClientError, ConflictError, LeaseExpired, NotFound, TunerError
from tuner.wire import DecisionOut, FailOut, JobOut


class JobCalls(Protocol):
    """What a :class:`Job` asks of its client (:class:`tuner.client.Client` is one)."""

    def job_call(self, job_id: int, operation: str, body: dict[str, Any]) -> DecisionOut: ...

    def fail_job(self, job_id: int, lease_token: str, error: str) -> FailOut: ...

log = logging.getLogger(__name__)

#: Bounds of the heartbeat interval, seconds.
MIN_HEARTBEAT_S = 0.2
MAX_HEARTBEAT_S = 10.0
#: Characters of a traceback sent with ``fail`` by the context manager.
TRACEBACK_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Decision:
    """The scheduler's answer to a report, heartbeat or completion.

    ``kind``: continue, stop, pause (the job is done; the trial waits at its rung for a
    promotion) or complete (the trial reached ``max_resource``). ``reason``: the facts behind
    it (rule, rung, rank, n, threshold).
    """

    kind: DecisionKind
    reason: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, out: DecisionOut) -> Decision:
        return cls(DecisionKind(out.decision), dict(out.reason))

    @property
    def is_stop(self) -> bool:
        return self.kind is DecisionKind.STOP


def value_fields(value: float | None) -> dict[str, Any]:
    """``{"value": v}`` for a finite value, ``{"value_kind": "nan"}`` (etc.) otherwise."""
    if value is None:
        return {}
    value = float(value)
    if math.isnan(value):
        return {"value_kind": "nan"}
    if math.isinf(value):
        return {"value_kind": "inf" if value > 0 else "-inf"}
    return {"value": value}


def metric_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """Extra metrics for the wire: non-finite floats travel as their names (``"nan"``)."""
    clean: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, bool):
            clean[name] = float(value)
        elif isinstance(value, int | float):
            clean[name] = float(value) if math.isfinite(value) else str(float(value))
        else:
            clean[name] = wire_text(str(value))
    return clean


def wire_text(text: str) -> str:
    """Text as the server stores it: a NUL character (which no database column holds, and
    the server refuses) shown as U+FFFD, as the worker agent shows it in output."""
    return text.replace("\x00", "\ufffd")


def heartbeat_interval_s(lease_expires_at: datetime | None, now: datetime | None = None) -> float:
    """A third of the lease's remaining time, within [MIN_HEARTBEAT_S, MAX_HEARTBEAT_S]."""
    if lease_expires_at is None:
        return MAX_HEARTBEAT_S
    now = now or datetime.now(UTC)
    if lease_expires_at.tzinfo is None:
        lease_expires_at = lease_expires_at.replace(tzinfo=UTC)
    ttl_s = (lease_expires_at - now).total_seconds()
    return min(MAX_HEARTBEAT_S, max(MIN_HEARTBEAT_S, ttl_s / 3))


class Job:
    """One leased job: train ``trial_id`` from ``from_resource`` to ``to_resource``.

    Report each step with :meth:`report`, end with :meth:`complete` (or :meth:`fail`); as a
    context manager, an exception fails the job with the traceback's tail. Attributes mirror
    :class:`tuner.wire.JobOut`; ``checkpoint`` is what to resume from (None: start afresh)
    and ``checkpoint_dir`` where the worker agent wants checkpoints written (None without
    an agent). ``metric`` and ``mode``: what the experiment optimises (``"val_loss"``,
    ``"min"``); the values reported must be that metric (None: not known, for a job made
    from an environment that does not say).

    ``next_for``: a worker id; the report or completion that ends the job then asks for the
    next job in the same call (:class:`tuner.wire.NextIn`), and ``next_job`` holds it when
    the server handed one out (the caller must train it or release it).
    """

    def __init__(
        self,
        client: JobCalls,
        out: JobOut,
        *,
        heartbeat: bool = True,
        checkpoint_dir: str | None = None,
        next_for: str | None = None,
    ) -> None:
        self._client = client
        self.next_for = next_for
        self.next_job: JobOut | None = None
        self.job_id = out.job_id
        self.lease_token = out.lease_token
        self.experiment_id = out.experiment_id
        self.trial_id = out.trial_id
        self.trial_number = out.trial_number
        self.metric: str | None = out.metric or None
        self.mode: str | None = out.mode if self.metric else None
        self.params: dict[str, Any] = dict(out.params)
        self.from_resource = out.from_resource
        self.to_resource = out.to_resource
        self.rung = out.rung
        self.bracket = out.bracket
        self.checkpoint = out.checkpoint or None
        self.lease_expires_at = out.lease_expires_at
        self.checkpoint_dir = checkpoint_dir
        self.should_stop = False
        self.last_decision: Decision | None = None
        self.last_step: int | None = None
        self.last_value: float | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if heartbeat:
            self._thread = threading.Thread(
                target=self._beat, name=f"tuner-heartbeat-{self.job_id}", daemon=True
            )
            self._thread.start()

    def __repr__(self) -> str:
        return (
            f"Job(job_id={self.job_id}, trial_number={self.trial_number}, "
            f"resource={self.from_resource}->{self.to_resource}, params={self.params!r})"
        )

    @property
    def is_closed(self) -> bool:
        """Whether the job was completed, failed or stopped (no more calls are useful)."""
        return self._closed.is_set()

    # ---- the protocol ------------------------------------------------------------------
    def report(
        self,
        step: int,
        value: float,
        checkpoint: str | None = None,
        *,
        metric: str | None = None,
        **metrics: Any,
    ) -> Decision:
        """Send the metric at ``step`` (resource units in ``(from_resource, to_resource]``).

        Non-finite values (a diverged run) are legal and rank worst; the trial stops.
        Repeating a report is harmless. Sets ``should_stop`` on a ``stop`` answer.
        ``metric``: the name of the metric ``value`` is (``"val_loss"``); the server refuses
        it when the experiment optimises another. ``metrics``: extra metrics, kept for display.

        Raises:
            LeaseExpired: another worker owns the job now (``should_stop`` is set too).
            OutOfRange: ``step`` is outside the job's range.
            DuplicateReport: another value was already stored at ``step``.
            MetricMismatch: ``metric`` is not the experiment's metric.
        """
        body = {
            "lease_token": self.lease_token,
            "step": int(step),
            **value_fields(value),
            "metrics": metric_fields(metrics),
        }
        if metric is not None:
            body["metric"] = str(metric)
        if checkpoint is not None:
            body["checkpoint"] = str(checkpoint)
        if self.next_for is not None:
            body["next"] = {"worker_id": self.next_for}
        decision = self._send("reports", body)
        self.last_step, self.last_value = int(step), float(value)
        if decision.is_stop:
            self._close()
        return decision

    def heartbeat(self) -> Decision:
        """Renew the lease now (the background thread does this by itself)."""
        return self._send("heartbeat", {"lease_token": self.lease_token})

    def complete(
        self,
        value: float | None = None,
        checkpoint: str | None = None,
        *,
        metric: str | None = None,
        **metrics: Any,
    ) -> Decision:
        """The job reached ``to_resource``: ``value`` there (default: the report at that
        step). Answers ``pause`` (await promotion), ``complete`` or ``stop``. ``metric``: as
        in :meth:`report`."""
        body: dict[str, Any] = {
            "lease_token": self.lease_token,
            **value_fields(value),
            "metrics": metric_fields(metrics),
        }
        if metric is not None:
            body["metric"] = str(metric)
        if checkpoint is not None:
            body["checkpoint"] = str(checkpoint)
        if self.next_for is not None:
            body["next"] = {"worker_id": self.next_for}
        try:
            return self._send("complete", body)
        finally:
            self._close()

    def fail(self, error: str | BaseException) -> FailOut:
        """Give the job up: it is retried (from the last checkpoint) or the trial fails."""
        text = _describe(error) if isinstance(error, BaseException) else str(error)
        try:
            out = self._client.fail_job(self.job_id, self.lease_token, wire_text(text[-10_000:]))
        finally:
            self._close()
        return out

    def close(self) -> None:
        """Stop the heartbeat without telling the server anything."""
        self._close()

    # ---- context manager ------------------------------------------------------------------
    def __enter__(self) -> Job:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.is_closed:
            return
        if exc is not None:
            try:
                self.fail(exc)
            except TunerError as fail_error:
                log.warning("event=fail_failed job_id=%s error=%s", self.job_id, fail_error)
            return
        self.finish()

    def finish(self) -> None:
        """End an open job after the training loop: complete it when it reported its last
        step, fail it when it stopped early without being told to."""
        if self.is_closed:
            return
        if self.should_stop:
            self._close()
        elif self.last_step == self.to_resource:
            self.complete()
        else:
            self.fail(
                f"the training loop ended at step {self.last_step} before reaching "
                f"{self.to_resource} without completing the job"
            )

    # ---- internals ------------------------------------------------------------------------
    def _send(self, operation: str, body: dict[str, Any]) -> Decision:
        try:
            out = self._client.job_call(self.job_id, operation, body)
        except (LeaseExpired, NotFound):
            self.should_stop = True
            self._close()
            raise
        decision = Decision.from_wire(out)
        if out.next is not None:
            self.next_job = out.next
        with self._lock:
            self.last_decision = decision
            if decision.is_stop:
                self.should_stop = True
        return decision

    def _close(self) -> None:
        self._closed.set()

    def _beat(self) -> None:
        interval = heartbeat_interval_s(self.lease_expires_at)
        while not self._closed.wait(interval):
            try:
                decision = self.heartbeat()
            except (ConflictError, NotFound) as exc:
                log.info("event=lease_lost job_id=%s detail=%s", self.job_id, exc)
                self.should_stop = True
                self._close()
                return
            except (ClientError, TunerError) as exc:
                # The server may be restarting: keep trying until the lease is gone.
                log.info("event=heartbeat_failed job_id=%s detail=%s", self.job_id, exc)
                continue
            if decision.kind is not DecisionKind.CONTINUE:
                self._close()
                return


def _describe(error: BaseException) -> str:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text[-TRACEBACK_TAIL_CHARS:]
