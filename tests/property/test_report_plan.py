"""The report plan (:func:`tuner.protocol.plan_report`) against the rule written out by hand.

The plan says which rungs a report is judged at, and the bound (``floor``) under which a
store's guard lets it land as a plain write, unjudged. The two must agree for every
experiment, bracket, trial rung and step, or a report that should have been judged would be
answered ``continue`` (the guard's bound) or judged twice (the rungs).
"""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

import tuner.coordinator as co
from tests.factories import make_document
from tuner.coordinator.outcomes import Context
from tuner.domain import Job, JobState
from tuner.protocol import plan_report
from tuner.storage.memory import MemoryStore


@st.composite
def experiments(draw: st.DrawFn) -> Context:
    eta = draw(st.integers(2, 4))
    min_resource = draw(st.integers(1, 5))
    max_resource = min_resource * eta ** draw(st.integers(1, 4)) + draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["asha", "async_hyperband", "hyperband", "sha"]))
    scheduler: dict[str, object] = {
        "type": kind, "eta": eta, "min_resource": min_resource, "max_resource": max_resource
    }
    if kind == "sha":
        scheduler["n_configs"] = eta**6  # enough to reach max_resource from rung 0
    if kind in ("asha", "async_hyperband"):
        scheduler["form"] = draw(st.sampled_from(["stopping", "promotion"]))
    experiment = co.create_experiment(MemoryStore(), make_document(scheduler), 0.0)
    return Context.of(experiment)


def _job(bracket: int, from_resource: int, to_resource: int) -> Job:
    return Job(1, 1, 1, 0, bracket, 0, from_resource, to_resource, None, JobState.LEASED, 0,
               "w", 10.0, 0.0, "hash")


def _judged_by_hand(ctx: Context, bracket: int, trial_rung: int, step: int) -> list[int]:
    """The stopping form judges a trial once at each rung below the top that its step
    reached, from its bracket's bottom; the promotion form at none (it judges completions)."""
    scheduler = ctx.scheduler
    if not scheduler.is_stopping:
        return []
    levels = scheduler.levels
    return [
        k for k in range(len(levels) - 1)
        if k >= scheduler.bracket_bottom(bracket) and levels[k] <= step and k > trial_rung
    ]


@settings(max_examples=400, deadline=None)
@given(ctx=experiments(), data=st.data())
def test_the_plan_agrees_with_the_rule_by_hand(ctx: Context, data: st.DataObject) -> None:
    levels = ctx.scheduler.levels
    bracket = data.draw(st.sampled_from(ctx.scheduler.brackets()), label="bracket")
    trial_rung = data.draw(st.integers(-1, len(levels) - 1), label="trial rung")
    step = data.draw(st.integers(1, levels[-1]), label="step")
    start = data.draw(st.integers(0, levels[-1]), label="from")
    value = data.draw(st.sampled_from([0.5, math.nan, math.inf]), label="value")
    plan = plan_report(ctx.scheduler, _job(bracket, start, levels[-1]), step, value)
    judged = _judged_by_hand(ctx, bracket, trial_rung, step)
    assert list(plan.rungs_to_judge(trial_rung)) == judged
    # The guard's bound: a plain write lands iff there is nothing to judge.
    assert (trial_rung >= plan.floor) == (not judged)
    assert plan.in_range == (start < step <= levels[-1])
    assert plan.finite == math.isfinite(value)
    reachable = _judged_by_hand(ctx, bracket, -1, step)
    assert plan.first_reach == bool(reachable and levels[reachable[-1]] == step)
    assert plan.may_be_plain == (plan.in_range and plan.finite and not plan.first_reach)


def test_the_plan_by_hand() -> None:
    """ASHA r=1, R=9, eta=3, stopping form: rungs at 1, 3 (and the top, 9)."""
    doc = make_document(
        {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9, "form": "stopping"}
    )
    ctx = Context.of(co.create_experiment(MemoryStore(), doc, 0.0))
    plans = [plan_report(ctx.scheduler, _job(0, 0, 9), step, 0.5) for step in range(1, 10)]
    assert [p.floor for p in plans] == [0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert [p.step for p in plans if p.first_reach] == [1, 3]
    assert list(plans[8].rungs_to_judge(-1)) == [0, 1]  # a trial that skipped to step 9
    assert list(plans[8].rungs_to_judge(0)) == [1]
    assert list(plans[8].rungs_to_judge(1)) == []
    assert not plan_report(ctx.scheduler, _job(0, 3, 9), 3, 0.5).in_range
    assert not plan_report(ctx.scheduler, _job(0, 0, 9), 5, math.nan).may_be_plain
    promotion = make_document({"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9})
    ctx = Context.of(co.create_experiment(MemoryStore(), promotion, 0.0))
    plans = [plan_report(ctx.scheduler, _job(0, 0, 9), step, 0.5) for step in range(1, 10)]
    assert {p.floor for p in plans} == {-1}
    assert all(p.may_be_plain for p in plans)


def test_a_bracket_starts_its_judgements_at_its_bottom() -> None:
    """Asynchronous Hyperband, bracket 1 of r=1, R=9, eta=3: trials start at rung 1 (step
    3), so a report at step 1 or 2 reaches no rung of theirs."""
    doc = make_document({"type": "async_hyperband", "eta": 3, "min_resource": 1,
                         "max_resource": 9, "form": "stopping"})
    ctx = Context.of(co.create_experiment(MemoryStore(), doc, 0.0))
    plans = [plan_report(ctx.scheduler, _job(1, 0, 9), step, 0.5) for step in range(1, 10)]
    assert [p.floor for p in plans] == [-1, -1, 1, 1, 1, 1, 1, 1, 1]
    assert [p.step for p in plans if p.first_reach] == [3]
    assert replace(plans[0], step=1).rungs_to_judge(-1) == range(1, 1)
