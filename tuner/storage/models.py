"""The SQLAlchemy schema: one table per core fact, indexed for the scheduler's reads.

Times are float seconds since the epoch (UTC) in ``Float`` columns named ``*_at``: the domain
uses floats, and a float column round-trips them exactly on SQLite and PostgreSQL alike
(``DateTime`` would truncate to microseconds and lose the time zone on SQLite).

Non-finite numbers cannot be stored portably, so every metric travels as a nullable finite
``value`` plus a ``value_kind`` (:class:`tuner.domain.ValueKind`). Rung losses are stored as a
finite ``loss`` plus ``loss_rank_kind`` (0 finite, 1 non-finite; ``loss`` is 0 then), so that
ordering by ``(loss_rank_kind, loss, trial_number)`` is the scheduler's order with
non-finite results last.

Alembic owns the schema (``migrations/``): change these classes only together with a new
revision.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tuner.domain import DecisionKind, ExperimentState, JobState, TrialState, ValueKind
from tuner.ranking import RANKED_NONE

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Plain JSON (text) on every backend, not JSONB: JSONB reorders object keys, and the order of
#: a search space's parameters (and of a trial's params) is meaningful.
JsonType = JSON()

#: Rung result status.
RUNG_OPEN = 0
RUNG_PROMOTED = 1
RUNG_CLOSED = 2

#: ``loss_rank_kind``: finite losses sort before non-finite ones.
LOSS_FINITE = 0
LOSS_NON_FINITE = 1

#: Jobs in these states hold their trial (at most one per trial).
ACTIVE_JOB_STATES = (JobState.QUEUED.value, JobState.LEASED.value)


def _enum(cls: type[enum.Enum]) -> Enum:
    """A string column holding the enum's values (not names), with room to add states."""
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    config: Mapped[dict[str, Any]]
    state: Mapped[ExperimentState] = mapped_column(_enum(ExperimentState), index=True)
    scheduler_state: Mapped[dict[str, Any]]
    n_trials: Mapped[int] = mapped_column(Integer, default=0)
    resource_used: Mapped[int] = mapped_column(BigInteger, default=0)  # beyond 2**31 units
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    #: Why the experiment is in its state, when the service put it there (a breaker's pause).
    state_reason: Mapped[str | None] = mapped_column(Text)


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("experiment_id", "number"),
        Index("ix_trials_experiment_id_params_key", "experiment_id", "params_key"),
        Index("ix_trials_experiment_id_state", "experiment_id", "state"),
        Index("ix_trials_experiment_id_best_loss", "experiment_id", "best_loss"),
        Index("ix_trials_experiment_id_bracket", "experiment_id", "bracket"),
        Index("ix_trials_experiment_id_updated_at", "experiment_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    bracket: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]]
    params_key: Mapped[str] = mapped_column(String(128))
    state: Mapped[TrialState] = mapped_column(_enum(TrialState))
    rung: Mapped[int] = mapped_column(Integer, default=-1)
    resource: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    checkpoint_step: Mapped[int] = mapped_column(Integer, default=0)
    # Finite numbers only (a non-finite best loss or value is stored as NULL plus a kind).
    best_loss: Mapped[float | None] = mapped_column(Float)
    best_loss_kind: Mapped[ValueKind | None] = mapped_column(_enum(ValueKind))
    last_value: Mapped[float | None] = mapped_column(Float)
    last_value_kind: Mapped[ValueKind | None] = mapped_column(_enum(ValueKind))
    retries: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    output_tail: Mapped[str | None] = mapped_column(Text)
    # The trial's ranked result (tuner.ranking), kept in step with rung_results by the one
    # write that adds a rung result: ranked_kind 0 finite, 1 non-finite (ranked_loss 0),
    # 2 none yet (ranked_step NULL).
    ranked_kind: Mapped[int] = mapped_column(Integer, server_default=text(str(RANKED_NONE)))
    ranked_step: Mapped[int | None] = mapped_column(Integer)
    ranked_loss: Mapped[float] = mapped_column(Float, server_default=text("0"))


# The ranking's order (tuner.ranking.rank_key): the best trial, trials by value.
Index(
    "ix_trials_experiment_id_ranking",
    TrialRow.experiment_id,
    TrialRow.ranked_kind,
    TrialRow.ranked_step.desc(),
    TrialRow.ranked_loss,
    TrialRow.number,
)


class BracketRow(Base):
    """Trials started per bracket, so ``Snapshot.n_in_bracket`` is one primary-key read."""

    __tablename__ = "brackets"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    bracket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n_trials: Mapped[int] = mapped_column(Integer, default=0)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_lease_expires_at", "state", "lease_expires_at"),
        Index("ix_jobs_experiment_id_state_id", "experiment_id", "state", "id"),
        Index("ix_jobs_trial_id", "trial_id"),
        # The breaker's read: an experiment's latest job endings (tuner.protocol.breaker_trips).
        Index("ix_jobs_experiment_id_ended_at", "experiment_id", "ended_at"),
        # At most one QUEUED or LEASED job per trial.
        Index(
            "uq_jobs_active_trial_id",
            "trial_id",
            unique=True,
            postgresql_where=text("state IN ('queued', 'leased')"),
            sqlite_where=text("state IN ('queued', 'leased')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    trial_number: Mapped[int] = mapped_column(Integer)
    bracket: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int] = mapped_column(Integer)
    from_resource: Mapped[int] = mapped_column(Integer)
    to_resource: Mapped[int] = mapped_column(Integer)
    checkpoint: Mapped[str | None] = mapped_column(Text)
    state: Mapped[JobState] = mapped_column(_enum(JobState))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    token_hash: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)


class ReportRow(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("trial_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    value_kind: Mapped[ValueKind] = mapped_column(_enum(ValueKind))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[float] = mapped_column(Float)


class SupersededReportRow(Base):
    """A report that a newer job of the same trial replaced: the newer job (a retry from an
    earlier checkpoint) trained the step again. Kept as history; never read by a scheduler."""

    __tablename__ = "superseded_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    value_kind: Mapped[ValueKind] = mapped_column(_enum(ValueKind))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[float] = mapped_column(Float)
    superseded_by_job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE")
    )
    superseded_at: Mapped[float] = mapped_column(Float)


class RungResultRow(Base):
    """One trial's result at one rung.

    ``status``: 0 open, 1 promoted, 2 closed (exclusive: a promoted result cannot be closed,
    nor a closed one promoted).
    """

    __tablename__ = "rung_results"
    __table_args__ = (
        UniqueConstraint("trial_id", "rung"),
        Index(
            "ix_rung_results_status_order",
            "experiment_id",
            "bracket",
            "rung",
            "status",
            "loss_rank_kind",
            "loss",
            "trial_number",
        ),
        Index(
            "ix_rung_results_order",
            "experiment_id",
            "bracket",
            "rung",
            "loss_rank_kind",
            "loss",
            "trial_number",
        ),
        Index("ix_rung_results_experiment_id_trial_number", "experiment_id", "trial_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    bracket: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int] = mapped_column(Integer)
    trial_number: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    loss: Mapped[float] = mapped_column(Float)
    loss_rank_kind: Mapped[int] = mapped_column(Integer)
    value: Mapped[float | None] = mapped_column(Float)
    value_kind: Mapped[ValueKind] = mapped_column(_enum(ValueKind))
    status: Mapped[int] = mapped_column(Integer, default=RUNG_OPEN)
    created_at: Mapped[float] = mapped_column(Float)
    resource: Mapped[int] = mapped_column(Integer)  # the rung's resource, levels[rung]


class RungRow(Base):
    """Counters of one rung of one bracket, kept in step with ``rung_results``."""

    __tablename__ = "rungs"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    bracket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    n_results: Mapped[int] = mapped_column(Integer, default=0)
    n_left: Mapped[int] = mapped_column(Integer, default=0)  # promoted or closed
    n_promoted: Mapped[int] = mapped_column(Integer, default=0)


class DecisionRow(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), index=True)
    kind: Mapped[DecisionKind] = mapped_column(_enum(DecisionKind))
    reason: Mapped[dict[str, Any]]
    step: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    gpus: Mapped[list[Any]]
    cpus: Mapped[int | None] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    labels: Mapped[dict[str, Any]]
    created_at: Mapped[float] = mapped_column(Float)
    last_seen_at: Mapped[float] = mapped_column(Float, index=True)
    lost_leases: Mapped[int] = mapped_column(Integer, default=0)


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
