"""Request and response bodies of the REST API: the public contract shared by the server
(``api/``) and the SDK. Request models end in ``In`` and refuse unknown fields; response
models end in ``Out``.

Numbers on the wire are finite. A non-finite metric (a diverged run) travels by name:
``{"value_kind": "nan"}`` (or ``"inf"``, ``"-inf"``) with ``value`` left out or null; a bare
``NaN`` or ``Infinity`` in JSON is refused. Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints, model_validator

__all__ = [
    "ClaimIn", "CompleteIn", "CurveOut", "CurvesOut", "DecisionOut", "DecisionRecordOut",
    "ErrorOut", "ExperimentOut", "ExperimentPageOut", "FailIn", "FailOut", "HealthOut",
    "HeartbeatIn", "JobOut", "JobSummaryOut", "NextIn", "OutputIn", "OutputOut", "ProgressOut",
    "ReportIn", "ReportOut", "RungOut", "RungValueOut", "RungsOut", "TokenIn", "TokenInfoOut",
    "TokenListOut", "TokenOut", "FailureOut", "FailuresOut",
    "TrialDetailOut", "TrialOut", "TrialPageOut", "WorkerIn", "WorkerOut",
    "WorkerPageOut", "GpuStat", "MAX_STEP", "MAX_METRICS", "OUTPUT_TAIL_CHARS", "BestTrialOut",
]

#: The largest step (resource units) a report may name.
MAX_STEP = 10**9
#: The most extra metrics one report may carry.
MAX_METRICS = 32
#: How much of a trial's output the server keeps (its last characters).
OUTPUT_TAIL_CHARS = 16 * 1024

_IN = ConfigDict(extra="forbid", strict=True)


def nul_path(data: Any, path: str = "") -> str | None:
    """Where ``data`` holds a NUL character (U+0000) in a string or a key: a dotted path
    (``"" `` for ``data`` itself), or None. Databases keep text without it (PostgreSQL's
    ``text`` refuses it), so the API refuses it up front."""
    stack: list[tuple[str, Any]] = [(path, data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                inner = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return inner
                stack.append((inner, item))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}.{i}" if where else str(i), v) for i, v in enumerate(value))
    return None


class _In(BaseModel):
    """A request body: unknown fields are refused, nothing is coerced (``"1.5"`` is not a
    number, ``true`` is not 1; an integer is a float), and no text holds a NUL character."""

    model_config = _IN

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        where = nul_path(data)
        if where is not None:
            raise ValueError(
                f"{where or 'the body'} contains a NUL character (\\u0000), which cannot be "
                "stored; remove it"
            )
        return data

Token = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
MetricValue = FiniteFloat | Annotated[str, StringConstraints(max_length=200)]
Checkpoint = Annotated[str, StringConstraints(max_length=4096)]
ValueKindName = Literal["finite", "nan", "inf", "-inf"]
Role = Literal["admin", "worker", "viewer"]


class ErrorOut(BaseModel):
    """Every error answer: a stable code and one sentence saying what is wrong."""

    error: str
    detail: str


# ---- the job protocol ----------------------------------------------------------------------
class ClaimIn(_In):
    """Ask for a job; wait up to ``wait_s`` seconds for one to appear (long poll)."""

    worker_id: Name | None = None
    wait_s: float = Field(0.0, ge=0, le=60, allow_inf_nan=False)


class JobOut(BaseModel):
    """A leased job: train ``trial_id`` from ``from_resource`` to ``to_resource``.

    ``lease_token`` is shown once; reports, heartbeats and the completion must carry it.
    ``metric`` and ``mode``: what the experiment optimises; the values reported must be it.
    """

    job_id: int
    lease_token: str
    experiment_id: int
    trial_id: int
    trial_number: int
    metric: str
    mode: Literal["min", "max"]
    params: dict[str, Any]
    from_resource: int
    to_resource: int
    rung: int
    bracket: int
    checkpoint: str | None
    lease_expires_at: datetime


class _ValueIn(_In):
    """A metric value: a finite ``value``, or a ``value_kind`` naming a non-finite one."""

    value: FiniteFloat | None = None
    value_kind: ValueKindName = "finite"

    @model_validator(mode="after")
    def _check_value(self) -> _ValueIn:
        if self.value_kind == "finite" and self.value is None and self._value_required():
            raise ValueError("value is required unless value_kind is nan, inf or -inf")
        if self.value_kind != "finite" and self.value is not None:
            raise ValueError(f"value must be null when value_kind is {self.value_kind}")
        return self

    def _value_required(self) -> bool:
        return True

    def as_float(self) -> float | None:
        """The value as a Python float (NaN and infinities included); None when absent."""
        if self.value_kind == "finite":
            return self.value
        return {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}[
            self.value_kind
        ]


class NextIn(_In):
    """Ask for the next job in the same call: when the answer ends this job (``stop``,
    ``pause`` or ``complete``), the server also leases the worker the next job of the same
    experiment, in the same transaction, as a claim without waiting would. It saves a worker
    a claim after every stopped trial; when nothing can be handed out now, claim as usual.

    Like a claim, it is not idempotent: if the answer is lost and the call is sent again,
    the job handed out the first time is never trained and is handed out again once its
    lease expires.
    """

    worker_id: Name | None = None


class ReportIn(_ValueIn):
    """The metric at ``step`` (resource units, within the job's range). ``metric``: the
    name of the metric ``value`` is; when given, it must be the experiment's (else 422
    ``metric_mismatch``)."""

    lease_token: Token
    step: int = Field(..., ge=1, le=MAX_STEP)
    metric: MetricName | None = None
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict, max_length=MAX_METRICS)
    checkpoint: Checkpoint | None = None
    next: NextIn | None = None


class DecisionOut(BaseModel):
    """The scheduler's answer, with the facts behind it (rule, rung, rank, n, threshold);
    ``next``: the next job, when the call asked for one, ended its job and one could be
    handed out at once."""

    decision: Literal["continue", "stop", "pause", "complete"]
    reason: dict[str, Any]
    next: JobOut | None = None


class HeartbeatIn(_In):
    lease_token: Token


class CompleteIn(_ValueIn):
    """The job reached ``to_resource``. ``value`` defaults to the report at that step;
    ``metric``, when given, must be the experiment's (as in :class:`ReportIn`)."""

    lease_token: Token
    metric: MetricName | None = None
    metrics: dict[MetricName, MetricValue] = Field(default_factory=dict, max_length=MAX_METRICS)
    checkpoint: Checkpoint | None = None
    next: NextIn | None = None

    def _value_required(self) -> bool:
        return False


class FailIn(_In):
    lease_token: Token
    error: str = Field("", max_length=10_000)


class FailOut(BaseModel):
    """Where the trial stands after a failure: re-queued (``pending``) or ``failed``."""

    trial_id: int
    trial_state: str
    retries: int


class OutputIn(_In):
    """A chunk of the trial's console output; the server keeps the last 16 Ki characters."""

    lease_token: Token
    text: str = Field(..., max_length=256 * 1024)


class OutputOut(BaseModel):
    trial_id: int
    n_chars: int = Field(description="length of the stored tail")


# ---- experiments and trials ------------------------------------------------------------------
class BestTrialOut(BaseModel):
    """The top of the experiment's ranking (docs/RESULTS.md): ``value`` is its value at
    ``step``, the resource of the highest rung it reached; ``checkpoint`` is where its
    training is saved, at step ``checkpoint_step`` (which may be past ``step``)."""

    trial_id: int
    trial_number: int
    value: float | None
    step: int | None = None
    checkpoint: str | None = None
    checkpoint_step: int | None = None


class ProgressOut(BaseModel):
    trials_by_state: dict[str, int]
    best: BestTrialOut | None


class ExperimentOut(BaseModel):
    """An experiment; ``state_reason`` says why, when the service chose its state itself
    (a pause after too many failed jobs in a row)."""

    id: int
    name: str
    state: str
    state_reason: str | None = None
    config: dict[str, Any] = Field(description="the experiment document as stored")
    n_trials: int
    resource_used: int
    created_at: datetime
    ended_at: datetime | None
    progress: ProgressOut


class ExperimentPageOut(BaseModel):
    items: list[ExperimentOut]
    total: int
    limit: int
    offset: int


class TrialOut(BaseModel):
    id: int
    experiment_id: int
    number: int
    bracket: int
    params: dict[str, Any]
    state: str
    rung: int
    resource: int
    best_value: float | None = Field(
        description="the best of its values at the rungs where it was judged (best seen), "
        "maybe at a lower rung than ranked_step; not what ranks it"
    )
    last_value: float | None
    last_value_kind: ValueKindName | None
    retries: int
    stop_requested: bool
    checkpoint: str | None
    checkpoint_step: int | None = Field(
        None, description="the step the checkpoint was saved at (None: no checkpoint)"
    )
    ranked_step: int | None = Field(
        None, description="the resource of the highest rung the trial reached (None: none yet)"
    )
    ranked_value: float | None = Field(
        None, description="its value there, which ranks it (None: none, or not finite)"
    )
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None


class TrialPageOut(BaseModel):
    items: list[TrialOut]
    total: int
    limit: int
    offset: int


class ReportOut(BaseModel):
    """A stored report. ``superseded_by_job_id``: a later job of the trial (a retry from an
    earlier checkpoint) reported this step again and its value is the current one; this
    one is kept as history."""

    step: int
    value: float | None
    value_kind: ValueKindName
    metrics: dict[str, Any]
    job_id: int
    created_at: datetime
    superseded_by_job_id: int | None = None


class RungValueOut(BaseModel):
    """The trial's value at one rung; ``status`` is open, promoted or closed."""

    bracket: int
    rung: int
    value: float | None
    value_kind: ValueKindName
    status: Literal["open", "promoted", "closed"]
    created_at: datetime


class DecisionRecordOut(BaseModel):
    kind: str
    reason: dict[str, Any]
    step: int | None
    created_at: datetime


class JobSummaryOut(BaseModel):
    id: int
    rung: int
    from_resource: int
    to_resource: int
    state: str
    attempt: int
    worker_id: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    ended_at: datetime | None = None
    error: str | None = Field(
        None,
        description="a failed job's error (its first line and its end) or why a lost job's "
        "lease ran out; null for a job that did not fail or get lost",
    )


class TrialDetailOut(TrialOut):
    reports: list[ReportOut]
    rung_values: list[RungValueOut]
    decisions: list[DecisionRecordOut]
    jobs: list[JobSummaryOut]
    output_tail: str | None


class FailureOut(BaseModel):
    """A job that ended without a result: the trial (``trial_number`` of ``experiment_id``,
    shown as ``EXP/NUM``), the job's ``attempt`` (0: the first run), ``outcome`` (``failed``:
    the command failed; ``lost``: its worker stopped renewing the lease), and ``error``: the
    end of the error text as the service keeps it (the last line says most)."""

    experiment_id: int
    trial_id: int
    trial_number: int
    job_id: int
    attempt: int
    rung: int
    outcome: Literal["failed", "lost"]
    worker_id: str | None
    ended_at: datetime | None
    error: str


class FailuresOut(BaseModel):
    """The latest failed or lost jobs of an experiment, newest first; ``total``: all of them."""

    experiment_id: int
    total: int
    items: list[FailureOut]


class RungOut(BaseModel):
    """One rung of one bracket. ``promotable_value`` is the value a trial must reach (or beat)
    to be in the rung's top ``floor(n / eta)`` now, in the metric's own direction."""

    bracket: int
    rung: int
    resource: int
    n_results: int
    n_promoted: int
    n_stopped: int
    top_k: int
    promotable_value: float | None


class RungsOut(BaseModel):
    experiment_id: int
    eta: int
    mode: Literal["min", "max"]
    items: list[RungOut]


class CurveOut(BaseModel):
    trial_id: int
    trial_number: int
    state: str
    steps: list[int]
    values: list[float | None]


class CurvesOut(BaseModel):
    experiment_id: int
    curves: list[CurveOut]


# ---- workers, tokens, health -----------------------------------------------------------------
#: How often the worker agent registers again (with its GPU readings and job count).
WORKER_REPORT_EVERY_S = 30.0
#: A worker not seen for longer than this is ``offline``: three missed registrations. It is
#: seen when it registers, leases a job, or heartbeats (every 10 s or less while it runs one).
WORKER_OFFLINE_AFTER_S = 90.0
#: Label keys with this prefix are the service's own (``tuner.agent``: the agent's readings).
RESERVED_LABEL_PREFIX = "tuner."


class GpuStat(BaseModel):
    """One GPU as ``nvidia-smi`` last read it; a field it could not read is null."""

    model_config = _IN

    index: int = Field(ge=0, le=100_000)
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    utilization: float | None = Field(
        None, ge=0, le=100, allow_inf_nan=False, description="percent of the last sample"
    )
    memory_used_mb: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                         description="MiB")
    memory_total_mb: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                          description="MiB")


class WorkerIn(_In):
    """A worker agent announces itself (repeating it updates the record and its last-seen
    time; the agent repeats it every ``WORKER_REPORT_EVERY_S``).

    ``gpu_stats``: its GPUs' use now (null: unknown, e.g. no nvidia-smi). ``jobs_done``: the
    jobs it has ended so far, any outcome (null: keep the count stored). ``exiting``: it is
    leaving, so it is shown ``offline`` at once.
    """

    worker_id: Name
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    gpus: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=256
    )
    cpus: int | None = Field(None, ge=0, le=100_000)
    slots: int = Field(1, ge=1, le=10_000)
    labels: dict[MetricName, Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=dict, max_length=32
    )
    gpu_stats: list[GpuStat] | None = Field(None, max_length=256)
    jobs_done: int | None = Field(None, ge=0, le=2**53)
    exiting: bool = False

    @model_validator(mode="after")
    def _check_labels(self) -> WorkerIn:
        for key in self.labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise ValueError(
                    f"labels.{key}: keys starting with {RESERVED_LABEL_PREFIX!r} are reserved "
                    "for the service; rename the label"
                )
        return self


class WorkerOut(BaseModel):
    """A worker. ``state``: ``busy`` (holds a job), ``idle``, or ``offline`` (exited, or not
    seen for ``WORKER_OFFLINE_AFTER_S`` seconds)."""

    worker_id: str
    host: str
    gpus: list[Any]
    cpus: int | None
    slots: int
    labels: dict[str, Any]
    created_at: datetime
    last_seen_at: datetime
    lost_leases: int
    current_jobs: list[int] = Field(description="ids of the jobs it holds now")
    state: Literal["busy", "idle", "offline"]
    gpu_stats: list[GpuStat] | None = Field(
        None, description="per-GPU use at its last registration; null: unknown"
    )
    jobs_done: int = Field(0, description="jobs it ended (any outcome), as it last said")


class WorkerPageOut(BaseModel):
    items: list[WorkerOut]
    total: int
    limit: int
    offset: int


class TokenIn(_In):
    role: Role
    name: Name


class TokenOut(BaseModel):
    """A new API token; ``token`` is shown only in this answer."""

    id: int
    name: str
    role: Role
    token: str


class HealthOut(BaseModel):
    status: Literal["ok"]
    database: str


# ---- token records -------------------------------------------------------------------------
class TokenInfoOut(BaseModel):
    """A stored API token, never its text nor its hash; ``revoked_at`` is null while active."""

    id: int
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class TokenListOut(BaseModel):
    items: list[TokenInfoOut]
