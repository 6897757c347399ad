"""The trials' ranking (:mod:`tuner.ranking`): what every store keeps and how SQL orders it
equal the rule written out by hand, on memory, SQLite and PostgreSQL.

Each example gives a few trials rung results at global rungs (resources 1, 3, 9, 27; the
same rung in every bracket), with tied, negative (a maximised metric) and non-finite
losses, some of them worst-value placeholders (closed when recorded: a trial that failed on
its way to the rung), added in any order. The expected ranking is computed here from those
results alone, without the stored columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import StoreFactory
from tests.storage.test_store_contract import new_experiment
from tuner.domain import RungResult
from tuner.ranking import rank_key
from tuner.storage import queries

LEVELS = (1, 3, 9, 27)
LOSSES = (-0.5, 0.1, 0.1, 0.2, 0.7, math.inf, math.nan)


@dataclass(frozen=True)
class Planned:
    """One rung result to add: ``trial`` (index), ``rung``, ``loss``, ``placeholder``."""

    trial: int
    rung: int
    loss: float
    placeholder: bool


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, list[Planned]]:
    n_trials = draw(st.integers(1, 8))
    planned = []
    for trial in range(n_trials):
        rungs = draw(st.sets(st.integers(0, len(LEVELS) - 1), max_size=len(LEVELS)))
        for rung in sorted(rungs):
            # A placeholder is only ever the trial's last (highest) result.
            placeholder = rung == max(rungs) and draw(st.booleans())
            loss = math.inf if placeholder else draw(st.sampled_from(LOSSES))
            planned.append(Planned(trial, rung, loss, placeholder))
    return n_trials, draw(st.permutations(planned))


def expected_ranking(n_trials: int, planned: list[Planned]) -> list[tuple[int, Any, Any]]:
    """(number, ranked step, ranked loss) of each trial, best first, by the rule as written:
    the highest counted rung by resource, then :func:`rank_key`."""
    ranked: dict[int, tuple[int | None, float | None]] = {i: (None, None) for i in range(n_trials)}
    for p in planned:
        step = LEVELS[p.rung]
        current = ranked[p.trial][0]
        if not p.placeholder and (current is None or step > current):
            ranked[p.trial] = (step, math.inf if math.isnan(p.loss) else p.loss)
    rows = [(number, step, loss) for number, (step, loss) in ranked.items()]
    return sorted(rows, key=lambda row: rank_key(row[1], row[2], row[0]))


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=plans())
def test_ranking_every_store_keeps_it_and_sql_orders_by_it(
    store_factory: StoreFactory, plan: tuple[int, list[Planned]]
) -> None:
    n_trials, planned = plan
    expected = expected_ranking(n_trials, planned)
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trials = [
            store.create_trial(experiment_id, i % 3, {"i": i}, f"k{i}", 1.0)
            for i in range(n_trials)
        ]
        for p in planned:
            trial = trials[p.trial]
            store.add_rung_result(experiment_id, RungResult(
                bracket=trial.bracket, rung=p.rung, trial_number=trial.number,
                trial_id=trial.id, loss=math.inf if math.isnan(p.loss) else p.loss,
                value=p.loss, promoted=False, closed=p.placeholder, created_at=2.0,
                resource=LEVELS[p.rung],
            ))
        kept = [store.get_trial(t.id) for t in trials]
        assert all(
            t.ranked_step == step and _same(t.ranked_loss, loss)
            for t, (_, step, loss) in zip(
                kept, sorted(expected, key=lambda row: row[0]), strict=True
            )
        ), (kept, expected)
        by_key = sorted(kept, key=lambda t: rank_key(t.ranked_step, t.ranked_loss, t.number))
        assert [t.number for t in by_key] == [row[0] for row in expected]
        session = getattr(store, "session", None)
        if session is None:  # the memory store: no SQL to order
            return
        store.flush()
        page = queries.list_trials(session, experiment_id, order_by="best", limit=100)
        assert [t.number for t in page.items] == [row[0] for row in expected]
        halves = [
            t.number
            for offset in (0, 3)
            for t in queries.list_trials(
                session, experiment_id, order_by="best", limit=3, offset=offset
            ).items
        ]
        assert halves == [row[0] for row in expected][:6]  # pages follow the one order
        summary = queries.get_experiment_detail(session, experiment_id).summary
        finite_rows = [row for row in expected if row[2] is not None and math.isfinite(row[2])]
        if not finite_rows:
            assert summary.best is None
        else:
            number, step, loss = finite_rows[0]
            assert summary.best is not None
            assert (summary.best.number, summary.best.ranked_step) == (number, step)
            assert summary.best.ranked_loss == loss
