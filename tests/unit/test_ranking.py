"""The ranking rule (tuner.ranking) on hand-made cases."""

from __future__ import annotations

import math

import pytest

from tuner.domain import RungResult
from tuner.ranking import counts, rank_columns, rank_key, ranked_loss_of, replaces


def test_ranking_orders_by_rung_reached_then_value_then_number() -> None:
    # (number, ranked step, loss): Hyperband's brackets start at different rungs, but a rung
    # has the same resource in every bracket, so steps compare across brackets.
    trials = [
        (0, 9, 0.10),  # the best value, but judged only after 9 units
        (1, 27, 0.40),
        (2, 27, 0.30),
        (3, 27, math.inf),  # diverged at the top rung: after every finite value
        (4, None, None),  # no rung result yet: last
        (5, 27, 0.30),  # ties with trial 2: the lower number first
        (6, 1, -5.0),  # a maximised metric's loss is negative
    ]
    ranked = sorted(trials, key=lambda t: rank_key(t[1], t[2], t[0]))
    assert [t[0] for t in ranked] == [2, 5, 1, 0, 6, 3, 4]


@pytest.mark.parametrize(
    ("step", "loss", "columns"),
    [
        (None, None, (2, None, 0.0)),
        (3, math.inf, (1, 3, 0.0)),
        (3, math.nan, (1, 3, 0.0)),
        (3, -0.25, (0, 3, -0.25)),
    ],
    ids=["none", "inf", "nan", "finite"],
)
def test_ranking_columns_round_trip(
    step: int | None, loss: float | None, columns: tuple[int, int | None, float]
) -> None:
    assert rank_columns(step, loss) == columns
    back = ranked_loss_of(columns[0], columns[2])
    assert back == (math.inf if loss is not None and not math.isfinite(loss) else loss)


def test_ranking_counts_results_judged_and_higher() -> None:
    judged = RungResult(0, 1, 0, 1, 0.5, 0.5, False, False, 1.0, 3)
    placeholder = RungResult(0, 2, 0, 1, math.inf, math.inf, False, True, 1.0, 9)
    assert counts(judged) and not counts(placeholder)
    assert replaces(None, 1) and replaces(1, 3) and not replaces(3, 1)
