"""Frozen domain values and state enums shared by every layer.

Metric direction is normalised once: every value is turned into a ``loss`` (lower is better,
``loss = sign * value``) before any algorithm sees it; non-finite values become ``math.inf``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any


class ExperimentState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in (ExperimentState.COMPLETED, ExperimentState.CANCELLED)


class TrialState(enum.StrEnum):
    """``PENDING`` has a queued job; ``RUNNING`` holds a lease; ``PAUSED`` waits at a rung
    for promotion; ``LOST`` lost its lease and waits for its job to be handed out again."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    LOST = "lost"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in FINISHED_TRIAL_STATES

    @property
    def word(self) -> str:
        """How people read it: ``PAUSED`` is "waiting" (at a rung, for a promotion), since
        "paused" is what an experiment is when someone pauses it. The dashboard says the
        same ("waiting at rung k")."""
        return "waiting" if self is TrialState.PAUSED else self.value

    def is_active(self) -> bool:
        """Holds or waits for a job (counts against ``max_concurrent``)."""
        return self in (TrialState.PENDING, TrialState.RUNNING, TrialState.LOST)


FINISHED_TRIAL_STATES = frozenset(
    {TrialState.COMPLETED, TrialState.STOPPED, TrialState.FAILED, TrialState.CANCELLED}
)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    RELEASED = "released"  # handed back by a worker that shut down; queued again
    CANCELLED = "cancelled"


class DecisionKind(enum.StrEnum):
    """The answer to a report or a completion."""

    CONTINUE = "continue"
    STOP = "stop"
    PAUSE = "pause"  # the job is done; the trial waits at its rung for a promotion
    COMPLETE = "complete"  # the trial reached max_resource


class ValueKind(enum.StrEnum):
    """How a metric value travels: finite values in ``value``, the rest by name."""

    FINITE = "finite"
    NAN = "nan"
    INF = "inf"
    NEG_INF = "-inf"

    @staticmethod
    def of(value: float) -> ValueKind:
        if math.isnan(value):
            return ValueKind.NAN
        if math.isinf(value):
            return ValueKind.INF if value > 0 else ValueKind.NEG_INF
        return ValueKind.FINITE

    def to_float(self, value: float | None) -> float:
        if self is ValueKind.FINITE:
            if value is None:
                raise ValueError("a finite value needs a number")
            return float(value)
        return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[self.value]


def to_loss(value: float, sign: float) -> float:
    """Direction-normalised loss: lower is better; NaN and infinities rank worst.

    Infinities rank worst in either direction: a metric that overflowed is a diverged run,
    never a perfect one.
    """
    if not math.isfinite(value):
        return math.inf
    return sign * value


@dataclass(frozen=True, slots=True)
class RungEntry:
    """One trial's value at one rung, as a scheduler sees it.

    ``rank`` (0-based, ties broken by trial number) is filled in where the store knows it.
    """

    loss: float
    trial_number: int
    rank: int | None = None

    @property
    def key(self) -> tuple[float, int]:
        return (self.loss, self.trial_number)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a decision was taken: the facts a user needs to check it by hand."""

    rule: str
    bracket: int | None = None
    rung: int | None = None
    resource: int | None = None
    rank: int | None = None
    n: int | None = None
    threshold: int | None = None
    cutoff_loss: float | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}
        if "cutoff_loss" in out and not math.isfinite(out["cutoff_loss"]):
            out["cutoff_loss"] = None
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    reason: Reason
    stop_rung: int | None = None  # the rung at which a stopping-form trial was stopped
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Experiment:
    id: int
    name: str
    config: Any  # tuner.config.ExperimentConfig (kept untyped here to avoid an import cycle)
    state: ExperimentState
    scheduler_state: dict[str, Any]
    n_trials: int
    resource_used: int
    created_at: float  # seconds since the epoch, UTC
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class Trial:
    """One configuration and where it stands.

    ``rung`` is the highest rung with a recorded result (-1 before the first); ``resource``
    is how far it has been trained; ``checkpoint`` is where that training is saved.
    """

    id: int
    experiment_id: int
    number: int
    bracket: int
    params: dict[str, Any]
    state: TrialState
    rung: int
    resource: int
    checkpoint: str | None
    checkpoint_step: int
    best_loss: float | None
    last_value: float | None
    retries: int
    stop_requested: bool
    created_at: float
    updated_at: float
    ended_at: float | None = None
    #: The trial's ranked result (:mod:`tuner.ranking`): the resource of the highest rung it
    #: reached and its loss there (``inf``: non-finite); None, None before the first.
    ranked_step: int | None = None
    ranked_loss: float | None = None

    @classmethod
    def new(
        cls,
        id: int,  # noqa: A002 - the field's name
        experiment_id: int,
        number: int,
        bracket: int,
        params: dict[str, Any],
        state: TrialState,
        now: float,
    ) -> Trial:
        """A trial just created: no rung yet, nothing trained, reported or retried."""
        return cls(
            id=id,
            experiment_id=experiment_id,
            number=number,
            bracket=bracket,
            params=params,
            state=state,
            rung=-1,
            resource=0,
            checkpoint=None,
            checkpoint_step=0,
            best_loss=None,
            last_value=None,
            retries=0,
            stop_requested=False,
            created_at=now,
            updated_at=now,
        )


@dataclass(frozen=True, slots=True)
class Job:
    """Train ``trial_id`` from ``from_resource`` to ``to_resource`` (rung ``rung``)."""

    id: int
    experiment_id: int
    trial_id: int
    trial_number: int
    bracket: int
    rung: int
    from_resource: int
    to_resource: int
    checkpoint: str | None
    state: JobState
    attempt: int
    worker_id: str | None
    lease_expires_at: float | None
    created_at: float
    token_hash: str | None = None  # sha256 of the lease token; never leaves the server


@dataclass(frozen=True, slots=True)
class Report:
    trial_id: int
    job_id: int
    step: int
    value: float  # may be NaN or infinite
    metrics: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class RungResult:
    """A trial's value at rung ``rung`` (whose resource is ``resource``, the same in every
    bracket)."""

    bracket: int
    rung: int
    trial_number: int
    trial_id: int
    loss: float
    value: float
    promoted: bool
    closed: bool
    created_at: float
    resource: int


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    trial_id: int
    kind: DecisionKind
    reason: dict[str, Any]
    step: int | None
    created_at: float
