"""Superseded reports (a retry's report of a step an ended job reported keeps the old value
as history), the reason the service gave an experiment its state (a breaker's pause), an
index for the breaker's read of the latest job endings, and a 64-bit resource counter.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VALUE_KINDS = ("finite", "nan", "inf", "-inf")


def _fk(column: str, table: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}", ondelete="CASCADE"
    )


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("state_reason", sa.Text(), nullable=True))
        batch.alter_column(
            "resource_used", existing_type=sa.Integer(), type_=sa.BigInteger(),
            existing_nullable=False,
        )
    op.create_index("ix_jobs_experiment_id_ended_at", "jobs", ["experiment_id", "ended_at"])
    op.create_table(
        "superseded_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column(
            "value_kind",
            sa.Enum(
                *_VALUE_KINDS, name="valuekind", native_enum=False, length=32,
                create_constraint=False,
            ),
            nullable=False,
        ),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("superseded_by_job_id", sa.Integer(), nullable=False),
        sa.Column("superseded_at", sa.Float(), nullable=False),
        _fk("job_id", "superseded_reports", "jobs"),
        _fk("superseded_by_job_id", "superseded_reports", "jobs"),
        _fk("trial_id", "superseded_reports", "trials"),
        sa.PrimaryKeyConstraint("id", name="pk_superseded_reports"),
    )
    op.create_index(
        "ix_superseded_reports_trial_id", "superseded_reports", ["trial_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_superseded_reports_trial_id", table_name="superseded_reports")
    op.drop_table("superseded_reports")
    op.drop_index("ix_jobs_experiment_id_ended_at", table_name="jobs")
    with op.batch_alter_table("experiments") as batch:
        batch.alter_column(
            "resource_used", existing_type=sa.BigInteger(), type_=sa.Integer(),
            existing_nullable=False,
        )
        batch.drop_column("state_reason")
