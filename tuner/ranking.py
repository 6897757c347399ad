"""How trials are ranked: "the best trial" is the one the scheduler would keep.

A trial's **ranked result** is its result at the highest rung it reached (by resource; rung
indices are global, so rung ``k`` is ``levels[k]`` in every bracket and the deepest rung is
also the largest resource). Trials are ranked by:

1. a finite value at that rung, before a non-finite one (a diverged run), before no rung
   result at all;
2. the resource of that rung, higher first: a value after 27 epochs beats one after 9,
   because the scheduler judged the trial worth training that far;
3. the value there, better first (the loss, ``sign * value``, lower first);
4. the trial's number, lower first.

Why not the best value seen at any step (``Trial.best_loss``): that value may come from a
step the trial's checkpoint is long past (a curve that peaks at epoch 12 and ends lower at
27), and it compares a value after 1 epoch with one after 27. The ranked result is the value
the scheduler itself judged, at the step where it judged it.

A trial "reached" a rung when it has a result there that was judged: the value it reported
on reaching the rung's resource (the stopping form), or its completion at the rung (the
promotion form), or a non-finite value reported on its way there. The worst-value
placeholder that a failed, hand-stopped or cancelled trial leaves at the rung it worked
toward (a closed result, recorded so that a synchronous rung still fills up) is not reached:
it does not rank (:func:`counts`).

This module is the one home of the rule. Stores keep each trial's ranked result in three
columns (:func:`rank_columns`, written with the rung result) and SQL orders by them in
:func:`rank_key`'s order (``tuner.storage.queries.RANKING``); a test holds the two equal.
"""

from __future__ import annotations

import math

from tuner.domain import RungResult

#: ``ranked_kind`` values: the first term of the ranking.
RANKED_FINITE = 0
RANKED_NON_FINITE = 1
RANKED_NONE = 2

RankColumns = tuple[int, int | None, float]
RankKey = tuple[int, int, float, int]


def counts(result: RungResult) -> bool:
    """A rung result ranks its trial unless it is a closed placeholder (recorded closed, as
    worst, for a trial that ended before reaching the rung)."""
    return not result.closed


def replaces(ranked_step: int | None, result_step: int) -> bool:
    """A counted result at ``result_step`` becomes the trial's ranked result when the trial
    has none yet, or only one at a lower resource."""
    return ranked_step is None or result_step > ranked_step


def rank_columns(step: int | None, loss: float | None) -> RankColumns:
    """``(ranked_kind, ranked_step, ranked_loss)`` as stored for a ranked result at ``step``
    with ``loss`` (``None``: no ranked result). The loss is stored finite (0 for a
    non-finite one, which ``ranked_kind`` says)."""
    if step is None:
        return RANKED_NONE, None, 0.0
    if loss is None or not math.isfinite(loss):
        return RANKED_NON_FINITE, step, 0.0
    return RANKED_FINITE, step, float(loss)


def ranked_loss_of(kind: int, loss: float) -> float | None:
    """The loss that :func:`rank_columns` stored: ``None`` without a ranked result, ``inf``
    for a non-finite one."""
    if kind == RANKED_NONE:
        return None
    return math.inf if kind == RANKED_NON_FINITE else loss


def rank_key(step: int | None, loss: float | None, number: int) -> RankKey:
    """The sort key of a trial (ascending: best first) from its ranked result's ``step``
    and ``loss`` (``None``, ``None``: no ranked result) and its ``number``."""
    kind, stored_step, stored_loss = rank_columns(step, loss)
    return kind, -(stored_step or 0), stored_loss, number


__all__ = [
    "RANKED_FINITE",
    "RANKED_NONE",
    "RANKED_NON_FINITE",
    "counts",
    "rank_columns",
    "rank_key",
    "ranked_loss_of",
    "replaces",
]
