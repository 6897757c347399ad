"""``quiet_floor`` is the rule of ``_passed_rungs`` as a bound on the trial's rung.

A report that the service stores in one statement (``api.quiet_reports``) is one whose
trial has ``rung >= quiet_floor``; the coordinator would judge it at ``_passed_rungs``. The
two must agree for every experiment, bracket, rung and step, or a report that should have
been judged would be answered ``continue`` unjudged.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

import tuner.coordinator as co
from tests.factories import make_document
from tuner.coordinator.outcomes import Context
from tuner.coordinator.report import _passed_rungs, quiet_floor
from tuner.domain import Trial, TrialState
from tuner.storage.memory import MemoryStore


@st.composite
def experiments(draw: st.DrawFn) -> Context:
    eta = draw(st.integers(2, 4))
    min_resource = draw(st.integers(1, 5))
    max_resource = min_resource * eta ** draw(st.integers(1, 4)) + draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["asha", "async_hyperband"]))
    scheduler = {
        "type": kind,
        "eta": eta,
        "min_resource": min_resource,
        "max_resource": max_resource,
        "form": draw(st.sampled_from(["stopping", "promotion"])),
    }
    experiment = co.create_experiment(MemoryStore(), make_document(scheduler), 0.0)
    return Context.of(experiment)


@settings(max_examples=300, deadline=None)
@given(ctx=experiments(), data=st.data())
def test_quiet_floor_agrees_with_the_rungs_a_report_passes(ctx: Context, data: st.DataObject):
    levels = ctx.scheduler.levels
    top_bracket = len(levels) - 1 if ctx.config.scheduler.type == "async_hyperband" else 0
    bracket = data.draw(st.integers(0, top_bracket), label="bracket")
    rung = data.draw(st.integers(-1, len(levels) - 1), label="rung")
    step = data.draw(st.integers(1, levels[-1]), label="step")
    trial = replace(Trial.new(1, 1, 0, bracket, {}, TrialState.RUNNING, 0.0), rung=rung)
    passes_none = not _passed_rungs(ctx, trial, step)
    assert passes_none == (rung >= quiet_floor(ctx, bracket, step))


def test_quiet_floor_by_hand():
    """ASHA r=1, R=9, eta=3, stopping form: rungs at 1, 3 (and the top, 9)."""
    doc = make_document(
        {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9, "form": "stopping"}
    )
    ctx = Context.of(co.create_experiment(MemoryStore(), doc, 0.0))
    assert [quiet_floor(ctx, 0, step) for step in range(1, 10)] == [0, 0, 1, 1, 1, 1, 1, 1, 1]
    promotion = make_document({"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9})
    ctx = Context.of(co.create_experiment(MemoryStore(), promotion, 0.0))
    assert {quiet_floor(ctx, 0, step) for step in range(1, 10)} == {-1}
