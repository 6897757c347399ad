"""Initial schema: experiments, trials, brackets, jobs, reports, rung results and counters,
decisions, workers, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EXPERIMENT_STATES = ("running", "paused", "completed", "cancelled")
_TRIAL_STATES = (
    "pending",
    "running",
    "paused",
    "lost",
    "completed",
    "stopped",
    "failed",
    "cancelled",
)
_JOB_STATES = ("queued", "leased", "done", "failed", "expired", "cancelled")
_DECISION_KINDS = ("continue", "stop", "pause", "complete")
_VALUE_KINDS = ("finite", "nan", "inf", "-inf")


def _enum(name: str, values: tuple[str, ...]) -> sa.Enum:
    """A VARCHAR(32) holding enum values (native_enum=False, no CHECK constraint)."""
    return sa.Enum(*values, name=name, native_enum=False, length=32, create_constraint=False)


def _fk(column: str, table: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("state", _enum("experimentstate", _EXPERIMENT_STATES), nullable=False),
        sa.Column("scheduler_state", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("resource_used", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
    )
    op.create_index("ix_experiments_state", "experiments", ["state"])

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("gpus", sa.JSON(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=True),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.Column("lost_leases", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_last_seen_at", "workers", ["last_seen_at"])

    op.create_table(
        "brackets",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        _fk("experiment_id", "brackets", "experiments"),
        sa.PrimaryKeyConstraint("experiment_id", "bracket", name="pk_brackets"),
    )

    op.create_table(
        "rungs",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rung", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("n_results", sa.Integer(), nullable=False),
        sa.Column("n_left", sa.Integer(), nullable=False),
        sa.Column("n_promoted", sa.Integer(), nullable=False),
        _fk("experiment_id", "rungs", "experiments"),
        sa.PrimaryKeyConstraint("experiment_id", "bracket", "rung", name="pk_rungs"),
    )

    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("params_key", sa.String(length=128), nullable=False),
        sa.Column("state", _enum("trialstate", _TRIAL_STATES), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("resource", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("checkpoint_step", sa.Integer(), nullable=False),
        sa.Column("best_loss", sa.Float(), nullable=True),
        sa.Column("best_loss_kind", _enum("valuekind", _VALUE_KINDS), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("last_value_kind", _enum("valuekind", _VALUE_KINDS), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("output_tail", sa.Text(), nullable=True),
        _fk("experiment_id", "trials", "experiments"),
        sa.PrimaryKeyConstraint("id", name="pk_trials"),
        sa.UniqueConstraint("experiment_id", "number", name="uq_trials_experiment_id_number"),
    )
    op.create_index("ix_trials_experiment_id_best_loss", "trials", ["experiment_id", "best_loss"])
    op.create_index("ix_trials_experiment_id_bracket", "trials", ["experiment_id", "bracket"])
    op.create_index("ix_trials_experiment_id_params_key", "trials", ["experiment_id", "params_key"])
    op.create_index("ix_trials_experiment_id_state", "trials", ["experiment_id", "state"])
    op.create_index("ix_trials_experiment_id_updated_at", "trials", ["experiment_id", "updated_at"])

    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("kind", _enum("decisionkind", _DECISION_KINDS), nullable=False),
        sa.Column("reason", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        _fk("trial_id", "decisions", "trials"),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_trial_id", "decisions", ["trial_id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("from_resource", sa.Integer(), nullable=False),
        sa.Column("to_resource", sa.Integer(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("state", _enum("jobstate", _JOB_STATES), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("token_hash", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        _fk("experiment_id", "jobs", "experiments"),
        _fk("trial_id", "jobs", "trials"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_experiment_id_state_id", "jobs", ["experiment_id", "state", "id"])
    op.create_index("ix_jobs_state_lease_expires_at", "jobs", ["state", "lease_expires_at"])
    op.create_index("ix_jobs_trial_id", "jobs", ["trial_id"])
    # At most one QUEUED or LEASED job per trial.
    active = sa.text("state IN ('queued', 'leased')")
    op.create_index(
        "uq_jobs_active_trial_id",
        "jobs",
        ["trial_id"],
        unique=True,
        postgresql_where=active,
        sqlite_where=active,
    )

    op.create_table(
        "rung_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("bracket", sa.Integer(), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("loss_rank_kind", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("value_kind", _enum("valuekind", _VALUE_KINDS), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        _fk("experiment_id", "rung_results", "experiments"),
        _fk("trial_id", "rung_results", "trials"),
        sa.PrimaryKeyConstraint("id", name="pk_rung_results"),
        sa.UniqueConstraint("trial_id", "rung", name="uq_rung_results_trial_id_rung"),
    )
    op.create_index(
        "ix_rung_results_experiment_id_trial_number",
        "rung_results",
        ["experiment_id", "trial_number"],
    )
    op.create_index(
        "ix_rung_results_order",
        "rung_results",
        ["experiment_id", "bracket", "rung", "loss_rank_kind", "loss", "trial_number"],
    )
    op.create_index(
        "ix_rung_results_status_order",
        "rung_results",
        ["experiment_id", "bracket", "rung", "status", "loss_rank_kind", "loss", "trial_number"],
    )

    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("value_kind", _enum("valuekind", _VALUE_KINDS), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        _fk("job_id", "reports", "jobs"),
        _fk("trial_id", "reports", "trials"),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("trial_id", "step", name="uq_reports_trial_id_step"),
    )
    op.create_index("ix_reports_job_id", "reports", ["job_id"])


def downgrade() -> None:
    for table in (
        "reports",
        "rung_results",
        "jobs",
        "decisions",
        "trials",
        "rungs",
        "brackets",
        "workers",
        "tokens",
        "experiments",
    ):
        op.drop_table(table)
