"""The Python SDK: every route of the REST API as a method, and the job loop.

from tuner.client import Client

with Client("http://127.0.0.1:8000", token) as client:
    experiment = client.submit("experiment.yaml")
    for job in experiment.jobs(worker_id="laptop"):
        with job:
            for step in range(job.from_resource + 1, job.to_resource + 1):
                decision = job.report(step, train_one_epoch())
                if job.should_stop:
                    break
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import httpx

from tuner.client.job import Decision, Job, metric_fields, value_fields
from tuner.client.transport import RetryPolicy, Transport
from tuner.errors import ConfigError, TunerError
from tuner.wire import (
    DecisionOut,
    ExperimentOut,
    ExperimentPageOut,
    FailOut,
    FailuresOut,
    HealthOut,
    JobOut,
    RungsOut,
    TokenInfoOut,
    TokenListOut,
    TokenOut,
    TrialDetailOut,
    TrialOut,
    TrialPageOut,
    WorkerOut,
    WorkerPageOut,
)

if TYPE_CHECKING:
    from tuner.config import ExperimentConfig

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"

log = logging.getLogger(__name__)

ExperimentSource: TypeAlias = "ExperimentConfig | Mapping[str, Any] | str | os.PathLike[str]"


class ClaimAnswer:
    """What a claim got: a job, nothing now (``job is None``), or the end (``over``)."""

    __slots__ = ("job", "over")

    def __init__(self, job: JobOut | None, over: bool) -> None:
        self.job, self.over = job, over


def document_of(source: ExperimentSource) -> dict[str, Any]:
    """The experiment document as JSON-ready data, validated locally first.

    Accepts an :class:`ExperimentConfig`, a mapping, or a path to a YAML/JSON file.

    Raises:
        ConfigError: the document is invalid (with the field path) or the file unreadable.
    """
    # Imported here: the experiment document pulls in the samplers (SciPy), which a
    # training script that only reports should not pay for at start-up.
    from tuner.config import ExperimentConfig, load_config, parse_config

    if isinstance(source, ExperimentConfig):
        config = source
    elif isinstance(source, Mapping):
        config = parse_config(dict(source))
    elif isinstance(source, str | os.PathLike):
        config = load_config(Path(source))
    else:
        raise ConfigError(
            f"an experiment is a mapping, an ExperimentConfig or a file path, "
            f"not {type(source).__name__}"
        )
    return config.model_dump(mode="json", exclude_none=True)


class Client:
    """A connection to a tuner server; a context manager.

    Args:
        url: the server (default ``TUNER_URL``, then ``http://127.0.0.1:8000``).
        token: an API token (default ``TUNER_TOKEN``).
        timeout_s: seconds to wait for an answer (long-polling claims add their wait).
        http: an ``httpx.Client`` to send with (tests pass one over ``httpx.MockTransport``).
        retry: how idempotent calls (reads, reports, heartbeats, completions) are repeated
            on connection errors and 5xx answers; claims and creations are never repeated.

    Every method raises the :mod:`tuner.errors` class named by the server's error body
    (``NotFound``, ``LeaseExpired``, ``AuthError``, ``Forbidden``, ``ConfigError``...), and
    :class:`tuner.errors.ClientError` when the server cannot be reached.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 10.0,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = (url or os.environ.get("TUNER_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("TUNER_TOKEN")
        self._transport = Transport(
            self.url, self.token, timeout_s=timeout_s, http=http, retry=retry
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def _get(self, path: str, **params: Any) -> Any:
        return self._transport.request("GET", API + path, params=params, idempotent=True).json()

    def _post(
        self, path: str, body: Any = None, *, idempotent: bool, retry: RetryPolicy | None = None
    ) -> Any:
        response = self._transport.request(
            "POST",
            API + path,
            json=body if body is not None else {},
            idempotent=idempotent,
            retry=retry,
        )
        return response.json()

    # ---- health ---------------------------------------------------------------------------
    def health(self) -> HealthOut:
        """``GET /healthz``: the server and its database answer."""
        response = self._transport.request("GET", "/healthz", idempotent=True)
        return HealthOut.model_validate(response.json())

    # ---- experiments ----------------------------------------------------------------------
    def create_experiment(self, source: ExperimentSource) -> ExperimentOut:
        """Create a running experiment; never retried (a lost answer would create two)."""
        body = document_of(source)
        return ExperimentOut.model_validate(self._post("/experiments", body, idempotent=False))

    def submit(self, source: ExperimentSource) -> Experiment:
        """Create an experiment and answer its handle (jobs, trials, actions)."""
        out = self.create_experiment(source)
        return Experiment(self, out.id, out)

    def experiment(self, experiment_id: int) -> Experiment:
        """A handle on an existing experiment (nothing is fetched yet)."""
        return Experiment(self, experiment_id)

    def list_experiments(
        self, *, state: str | None = None, limit: int = 20, offset: int = 0
    ) -> ExperimentPageOut:
        return ExperimentPageOut.model_validate(
            self._get("/experiments", state=state, limit=limit, offset=offset)
        )

    def get_experiment(self, experiment_id: int) -> ExperimentOut:
        return ExperimentOut.model_validate(self._get(f"/experiments/{experiment_id}"))

    def pause(self, experiment_id: int) -> ExperimentOut:
        return self._act(experiment_id, "pause")

    def resume(self, experiment_id: int) -> ExperimentOut:
        return self._act(experiment_id, "resume")

    def cancel(self, experiment_id: int) -> ExperimentOut:
        return self._act(experiment_id, "cancel")

    def _act(self, experiment_id: int, action: str) -> ExperimentOut:
        # Pausing a paused experiment again is harmless: safe to repeat.
        data = self._post(f"/experiments/{experiment_id}/{action}", idempotent=True)
        return ExperimentOut.model_validate(data)

    def list_trials(
        self,
        experiment_id: int,
        *,
        state: str | None = None,
        order_by: str = "number",
        limit: int = 50,
        offset: int = 0,
    ) -> TrialPageOut:
        """Trials of an experiment; ``order_by="value"`` puts the best first."""
        return TrialPageOut.model_validate(
            self._get(
                f"/experiments/{experiment_id}/trials",
                state=state,
                order_by=order_by,
                limit=limit,
                offset=offset,
            )
        )

    def rungs(self, experiment_id: int) -> RungsOut:
        return RungsOut.model_validate(self._get(f"/experiments/{experiment_id}/rungs"))

    # ---- trials ---------------------------------------------------------------------------
    def get_trial(self, trial_id: int) -> TrialDetailOut:
        return TrialDetailOut.model_validate(self._get(f"/trials/{trial_id}"))

    def stop_trial(self, trial_id: int) -> TrialOut:
        """Stop a trial by hand; a running one hears ``stop`` at its next report/heartbeat."""
        return TrialOut.model_validate(self._post(f"/trials/{trial_id}/stop", idempotent=True))

    def get_trial_by_number(self, experiment_id: int, number: int) -> TrialDetailOut:
        """Trial ``number`` of an experiment (what people see and type: ``EXP/NUM``).

        Raises:
            NotFound: the experiment does not exist or has no such trial.
        """
        path = f"/experiments/{experiment_id}/trials/{number}"
        return TrialDetailOut.model_validate(self._get(path))

    def stop_trial_by_number(self, experiment_id: int, number: int) -> TrialOut:
        """Stop trial ``number`` of an experiment by hand (as :meth:`stop_trial`)."""
        path = f"/experiments/{experiment_id}/trials/{number}/stop"
        return TrialOut.model_validate(self._post(path, idempotent=True))

    def failures(self, experiment_id: int, *, limit: int = 10) -> FailuresOut:
        """The experiment's latest failed jobs (newest first), each with its error's tail."""
        return FailuresOut.model_validate(
            self._get(f"/experiments/{experiment_id}/failures", limit=limit)
        )

    def export(self, experiment_id: int, format: str = "csv") -> str | dict[str, Any]:
        """The experiment's trials in ranking order, for a spreadsheet or a notebook:
        ``format="csv"`` (the CSV text) or ``"json"`` (the decoded document).

        Raises:
            ConfigError: ``format`` is neither csv nor json.
        """
        if format not in ("csv", "json"):
            raise ConfigError(f"format is {format!r}, but must be csv or json")
        response = self._transport.request(
            "GET",
            f"{API}/experiments/{experiment_id}/export",
            params={"format": format},
            idempotent=True,
        )
        if format == "json":
            data: dict[str, Any] = response.json()
            return data
        return response.text

    # ---- tokens and workers ---------------------------------------------------------------
    def create_token(self, role: str, name: str) -> TokenOut:
        """A new API token (admin only); its text is in this answer only."""
        data = self._post("/tokens", {"role": role, "name": name}, idempotent=False)
        return TokenOut.model_validate(data)

    def list_tokens(self, *, include_revoked: bool = False) -> TokenListOut:
        """The API tokens (admin only): id, name, role, times; never their text."""
        return TokenListOut.model_validate(self._get("/tokens", include_revoked=include_revoked))

    def revoke_token(self, token_id: int) -> TokenInfoOut:
        """Revoke a token (admin only; idempotent). Other server replicas refuse it within
        their token cache's lifetime (10 s).

        Raises:
            NotFound: no token has this id.
            ConflictError: it is the last active admin token.
        """
        data = self._post(f"/tokens/{token_id}/revoke", idempotent=True)
        return TokenInfoOut.model_validate(data)

    def register_worker(
        self,
        worker_id: str,
        *,
        host: str | None = None,
        gpus: list[str] | None = None,
        cpus: int | None = None,
        slots: int = 1,
        labels: dict[str, str] | None = None,
        gpu_stats: list[dict[str, Any]] | None = None,
        jobs_done: int | None = None,
        exiting: bool = False,
        retry: RetryPolicy | None = None,
    ) -> WorkerOut:
        """Announce a worker agent (repeating it updates the record and keeps it online:
        at least every ``tuner.wire.WORKER_REPORT_EVERY_S``). ``gpu_stats``: its GPUs' use
        now (None: unknown); ``jobs_done``: the jobs it has ended; ``exiting``: it leaves."""
        body: dict[str, Any] = {
            "worker_id": worker_id,
            "host": host or socket.gethostname(),
            "gpus": gpus or [],
            "cpus": cpus,
            "slots": slots,
            "labels": labels or {},
            "gpu_stats": gpu_stats,
            "exiting": exiting,
        }
        if jobs_done is not None:
            body["jobs_done"] = jobs_done
        return WorkerOut.model_validate(
            self._post("/workers", body, idempotent=True, retry=retry)
        )

    def list_workers(self, *, limit: int = 50, offset: int = 0) -> WorkerPageOut:
        return WorkerPageOut.model_validate(self._get("/workers", limit=limit, offset=offset))

    # ---- the job protocol -----------------------------------------------------------------
    def claim(
        self,
        experiment_id: int | None = None,
        *,
        worker_id: str | None = None,
        wait_s: float = 0.0,
    ) -> ClaimAnswer:
        """Lease a job of ``experiment_id`` (None: of any running experiment), waiting up to
        ``wait_s`` seconds (at most 60) for one. Never retried: a repeated claim whose first
        answer was lost would lease a second job."""
        path = f"/experiments/{experiment_id}/claims" if experiment_id is not None else "/claims"
        body: dict[str, Any] = {"wait_s": min(max(wait_s, 0.0), 60.0)}
        if worker_id:
            body["worker_id"] = worker_id
        response = self._transport.request(
            "POST",
            API + path,
            json=body,
            idempotent=False,
            timeout_s=self._transport.timeout_s + body["wait_s"],
        )
        if response.status_code == 410:
            return ClaimAnswer(None, over=True)
        if response.status_code == 204:
            return ClaimAnswer(None, over=False)
        return ClaimAnswer(JobOut.model_validate(response.json()), over=False)

    def job_call(
        self,
        job_id: int,
        operation: str,
        body: dict[str, Any],
        *,
        retry: RetryPolicy | None = None,
    ) -> DecisionOut:
        """``POST /jobs/{id}/{reports|heartbeat|complete}``: all idempotent, so retried
        (``retry`` replaces the client's policy for this call)."""
        return DecisionOut.model_validate(
            self._post(f"/jobs/{job_id}/{operation}", body, idempotent=True, retry=retry)
        )

    def fail_job(self, job_id: int, lease_token: str, error: str) -> FailOut:
        """Give a job up. Repeating is answered as the first time, so it is retried."""
        data = self._post(
            f"/jobs/{job_id}/fail",
            {"lease_token": lease_token, "error": error},
            idempotent=True,
        )
        return FailOut.model_validate(data)

    def release_job(self, job_id: int, lease_token: str) -> FailOut:
        """Hand a job back (shutting down): queued again without spending a retry."""
        data = self._post(f"/jobs/{job_id}/release", {"lease_token": lease_token}, idempotent=True)
        return FailOut.model_validate(data)

    def post_output(self, job_id: int, lease_token: str, text: str) -> None:
        """Append to the trial's console output (the server keeps its tail). Not retried:
        a repeated chunk would appear twice."""
        self._post(
            f"/jobs/{job_id}/output",
            {"lease_token": lease_token, "text": text},
            idempotent=False,
        )

    def report(
        self,
        job_id: int,
        lease_token: str,
        step: int,
        value: float,
        *,
        metric: str | None = None,
        **metrics: Any,
    ) -> Decision:
        """One report without a :class:`Job` object (see :meth:`Job.report`)."""
        body = {
            "lease_token": lease_token,
            "step": int(step),
            **value_fields(value),
            "metrics": metric_fields(metrics),
        }
        if metric is not None:
            body["metric"] = str(metric)
        return Decision.from_wire(self.job_call(job_id, "reports", body))


class Experiment:
    """A handle on one experiment: its state, trials, actions and the job loop."""

    def __init__(self, client: Client, experiment_id: int, info: ExperimentOut | None = None):
        self.client = client
        self.id = experiment_id
        self._info = info

    def __repr__(self) -> str:
        return f"Experiment(id={self.id})"

    def info(self) -> ExperimentOut:
        """Fetch the experiment now (state, progress, best trial)."""
        self._info = self.client.get_experiment(self.id)
        return self._info

    @property
    def state(self) -> str:
        return self.info().state

    def trials(self, **kwargs: Any) -> TrialPageOut:
        return self.client.list_trials(self.id, **kwargs)

    def best_trial(self) -> TrialOut | None:
        page = self.client.list_trials(self.id, order_by="value", limit=1)
        return page.items[0] if page.items else None

    def pause(self) -> ExperimentOut:
        return self.client.pause(self.id)

    def resume(self) -> ExperimentOut:
        return self.client.resume(self.id)

    def cancel(self) -> ExperimentOut:
        return self.client.cancel(self.id)

    def wait(self, *, poll_s: float = 1.0, timeout_s: float | None = None) -> ExperimentOut:
        """Poll until the experiment is completed or cancelled (or the timeout passes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            info = self.info()
            if info.state in ("completed", "cancelled"):
                return info
            if deadline is not None and time.monotonic() > deadline:
                return info
            time.sleep(poll_s)

    def jobs(
        self, *, worker_id: str | None = None, wait_s: float = 30.0, heartbeat: bool = True
    ) -> Iterator[Job]:
        """Yield jobs until the experiment is over (410), long-polling while there is nothing
        to do (204). Each job heartbeats in the background until it is completed, failed or
        stopped; a job the loop body leaves open is finished when the next one is asked for
        (completed if it reported ``to_resource``, else failed).

        The report or completion that ends a job asks for the next one in the same call
        (:class:`tuner.wire.NextIn`), so a stopped trial costs no claim of its own; a job
        handed out that way and not yielded (the loop was left) is released at once."""
        worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        following: JobOut | None = None
        try:
            while True:
                if following is None:
                    answer = self.client.claim(self.id, worker_id=worker_id, wait_s=wait_s)
                    if answer.over:
                        return
                    if answer.job is None:
                        continue
                    out = answer.job
                else:
                    out, following = following, None
                job = Job(self.client, out, heartbeat=heartbeat, next_for=worker_id)
                try:
                    yield job
                finally:
                    job.finish()
                    following, job.next_job = job.next_job, None
        finally:
            if following is not None:
                try:
                    self.client.release_job(following.job_id, following.lease_token)
                except TunerError as exc:  # its lease expires instead; it is handed out again
                    log.warning("event=release_failed job_id=%s error=%s", following.job_id, exc)
