"""The SQL form of :mod:`tuner.ranking`: the write that keeps a trial's ranked result in step
with its rung results, and the order of the ranking.

The values come from the pure rule (:func:`tuner.ranking.rank_columns`); SQL only compares
them: a result replaces the trial's ranked one when it is at a higher resource
(:func:`tuner.ranking.replaces`), and trials sort by the stored columns in the order of
:func:`tuner.ranking.rank_key` (a test holds SQL's order equal to sorting by that key, on
SQLite and PostgreSQL). Index: ``ix_trials_experiment_id_ranking``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, Integer, Table, Update, bindparam, or_, update

from tuner.domain import RungResult
from tuner.ranking import rank_columns
from tuner.storage.sql.tables import TRIAL, TRIALS

RANKED_STEP = bindparam("k_step", type_=Integer)


def replaces() -> ColumnElement[bool]:
    """The trial has no ranked result yet, or one below ``k_step``
    (:func:`tuner.ranking.replaces`)."""
    return or_(TRIAL.ranked_step.is_(None), TRIAL.ranked_step < RANKED_STEP)


#: Make a counted rung result the trial's ranked result, where it replaces the current one
#: (parameters: :func:`rank_params`).
RANK_TRIAL: Update = (
    update(TRIALS)
    .where(TRIAL.id == bindparam("k_trial", type_=Integer), replaces())
    .values(
        ranked_kind=bindparam("k_kind", type_=Integer),
        ranked_step=RANKED_STEP,
        ranked_loss=bindparam("k_loss", type_=Float),
    )
)


def rank_params(result: RungResult) -> dict[str, Any]:
    """The parameters of :data:`RANK_TRIAL` for ``result``."""
    kind, step, loss = rank_columns(result.resource, result.loss)
    return {"k_trial": result.trial_id, "k_kind": kind, "k_step": step, "k_loss": loss}


def ranking_order(table: Table = TRIALS) -> list[ColumnElement[Any]]:
    """ORDER BY of the ranking over ``table`` (``trials`` or an alias of it): best first."""
    c = table.c
    return [c.ranked_kind, c.ranked_step.desc(), c.ranked_loss, c.number]
