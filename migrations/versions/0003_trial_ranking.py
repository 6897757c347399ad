"""Trials ranked as the scheduler ranks them (tuner.ranking): each rung result says its
resource, and each trial keeps its ranked result (the resource of the highest rung it
reached, the loss there and its kind) in three columns, with an index in the ranking's order.

Existing rows are filled in: a rung result's resource is ``levels[rung]`` of its
experiment's document (the rung math of ``tuner.schedulers.rungs.rung_levels``, copied here
so that this revision keeps meaning what it meant), and a trial's ranked result is its
result at ``trials.rung`` (the highest rung where it was judged; a worst-value placeholder
left at the rung a failed or stopped trial worked toward lies above it, and does not rank).

SQLite: the trials' columns are added in place (a rebuild of ``trials`` would drop it, and
with foreign keys on, its children with it), so the two that are NOT NULL keep a server
default; ``rung_results`` (no table refers to it) is rebuilt to make ``resource`` NOT NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RANKED_NONE = 2  # ranked_kind: 0 finite, 1 non-finite, 2 no ranked result
_RANKING_COLUMNS = [
    "experiment_id", "ranked_kind", sa.column("ranked_step").desc(), "ranked_loss", "number"
]


def _levels(document: Any) -> list[int]:
    """Resource of every rung of the experiment ``document`` (``rung_levels``)."""
    if isinstance(document, str):
        document = json.loads(document)
    scheduler = (document or {}).get("scheduler") or {}
    r, big_r, eta = (
        int(scheduler.get("min_resource", 1)),
        int(scheduler["max_resource"]),
        int(scheduler.get("eta", 3)),
    )
    levels, level = [], r
    while level < big_r:
        levels.append(level)
        level *= eta
    levels.append(big_r)
    return levels


def _fill_rung_resources(conn: sa.Connection) -> None:
    results = sa.table("rung_results", sa.column("experiment_id"), sa.column("rung"),
                       sa.column("resource"))
    used = sa.select(results.c.experiment_id).distinct()
    for experiment_id, document in conn.execute(
        sa.text("SELECT id, config FROM experiments WHERE id IN (:ids)").bindparams(
            sa.bindparam("ids", expanding=True)
        ),
        {"ids": list(conn.execute(used).scalars())},
    ):
        for rung, resource in enumerate(_levels(document)):
            conn.execute(
                sa.update(results)
                .where(results.c.experiment_id == experiment_id, results.c.rung == rung)
                .values(resource=resource)
            )


def _fill_trial_rankings(conn: sa.Connection) -> None:
    at_rung = (
        "FROM rung_results r WHERE r.trial_id = trials.id AND r.rung = trials.rung"
    )
    conn.execute(sa.text(
        f"UPDATE trials SET ranked_step = (SELECT r.resource {at_rung}), "
        f"ranked_kind = COALESCE((SELECT r.loss_rank_kind {at_rung}), {_RANKED_NONE}), "
        f"ranked_loss = COALESCE((SELECT r.loss {at_rung}), 0) "
        "WHERE rung >= 0"
    ))


def upgrade() -> None:
    conn = op.get_bind()
    op.add_column("rung_results", sa.Column("resource", sa.Integer(), nullable=True))
    _fill_rung_resources(conn)
    with op.batch_alter_table("rung_results") as batch:
        batch.alter_column("resource", existing_type=sa.Integer(), nullable=False)
    op.add_column("trials", sa.Column(
        "ranked_kind", sa.Integer(), nullable=False, server_default=sa.text(str(_RANKED_NONE))
    ))
    op.add_column("trials", sa.Column("ranked_step", sa.Integer(), nullable=True))
    op.add_column("trials", sa.Column(
        "ranked_loss", sa.Float(), nullable=False, server_default=sa.text("0")
    ))
    _fill_trial_rankings(conn)
    op.create_index("ix_trials_experiment_id_ranking", "trials", _RANKING_COLUMNS)


def downgrade() -> None:
    op.drop_index("ix_trials_experiment_id_ranking", table_name="trials")
    # SQLite >= 3.35 drops a column in place (no rebuild of trials and its children).
    for column in ("ranked_loss", "ranked_step", "ranked_kind"):
        op.drop_column("trials", column)
    with op.batch_alter_table("rung_results") as batch:
        batch.drop_column("resource")
