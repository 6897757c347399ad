"""Hand-computed cases for every rule (Li et al., JMLR 2018 and MLSys 2020; Bohdal et al. 2023)."""

import math
from collections import Counter

import pytest

import tuner.coordinator as co
from tests.factories import Driver, FakeSnapshot, make_document
from tuner.domain import DecisionKind, RungEntry, TrialState
from tuner.schedulers import Asha, Finished, Pasha, Promote, StartTrial, SyncSuccessiveHalving, Wait


def x_objective(params, resource):
    return params["x"] + 1.0 / resource


def test_hyperband_runs_the_paper_table_for_R81_eta3():
    driver = Driver(make_document({"type": "hyperband", "max_resource": 81}), x_objective)
    driver.run(workers=8)
    counts = driver.store.rung_counts(driver.experiment.id)
    got = {}
    for (bracket, rung), (n_results, n_promoted) in counts.items():
        got.setdefault(bracket, []).append((rung, n_results, n_promoted))
    levels = (1, 3, 9, 27, 81)
    shapes = {b: " -> ".join(f"{n}x{levels[k]}" for k, n, _ in sorted(v)) for b, v in got.items()}
    assert shapes == {
        0: "81x1 -> 27x3 -> 9x9 -> 3x27 -> 1x81",
        1: "34x3 -> 11x9 -> 3x27 -> 1x81",
        2: "15x9 -> 5x27 -> 1x81",
        3: "8x27 -> 2x81",
        4: "5x81",
    }
    for rows in got.values():  # each rung promotes exactly floor(n_i / eta)
        for k, n, promoted in rows:
            assert promoted == (n // 3 if k < 4 else 0)
    trials = driver.store.trials(driver.experiment.id)
    assert len(trials) == 143
    assert Counter(t.state for t in trials) == {TrialState.COMPLETED: 10, TrialState.STOPPED: 133}


def test_sync_sha_waits_for_a_full_rung_before_promoting():
    rule = SyncSuccessiveHalving(1, 9, 3, ((0, 9),))
    snap = FakeSnapshot(brackets_of={n: 0 for n in range(9)}, n_trials=9, n_active=1)
    snap.rungs[(0, 0)] = {n: float(n) for n in range(8)}  # 8 of 9 results
    assert isinstance(rule.next_action(snap), Wait)
    snap.rungs[(0, 0)][8] = -1.0
    action = rule.next_action(snap)
    assert isinstance(action, Promote)
    assert (action.trial_number, action.rung, action.resource) == (8, 1, 3)


def test_sync_sha_refuses_too_few_configurations():
    with pytest.raises(Exception, match="needs at least 9"):
        SyncSuccessiveHalving(1, 9, 3, ((0, 5),))


def test_hyperband_without_parallel_brackets_waits_on_stragglers():
    rule = SyncSuccessiveHalving.hyperband(1, 9, 3, parallel_brackets=False)
    snap = FakeSnapshot(brackets_of={n: 0 for n in range(9)}, n_trials=9, n_active=1)
    snap.rungs[(0, 0)] = {n: float(n) for n in range(8)}
    assert isinstance(rule.next_action(snap), Wait)
    parallel = SyncSuccessiveHalving.hyperband(1, 9, 3, parallel_brackets=True)
    action = parallel.next_action(snap)
    assert isinstance(action, StartTrial)
    assert action.bracket == 1


def test_asha_promotion_sequence_worked_by_hand():
    """eta=3, rungs 1, 3, 9; each line: what the claim hands out, and the value it reports."""
    rule = Asha(1, 9, 3)
    snap = FakeSnapshot()

    def step(expected: tuple):
        action = rule.next_action(snap)
        if expected[0] == "start":
            assert isinstance(action, StartTrial), action
            snap.brackets_of[snap.n_trials] = 0
            snap.n_trials += 1
        else:
            assert isinstance(action, Promote), action
            assert (action.trial_number, action.from_rung, action.rung) == expected[1:]
            snap.promoted.add((0, action.from_rung, action.trial_number))

    def result(number, rung, loss):
        snap.rungs.setdefault((0, rung), {})[number] = loss

    step(("start",))
    result(0, 0, 5.0)  # rung0 {0:5}: floor(1/3)=0 promotable
    step(("start",))
    result(1, 0, 3.0)  # floor(2/3)=0
    step(("start",))
    result(2, 0, 4.0)  # n=3: top 1 = {1}
    step(("promote", 1, 0, 1))
    step(("start",))
    result(3, 0, 1.0)  # n=4: top 1 = {3}, not yet promoted
    step(("promote", 3, 0, 1))  # trial 1 stays promoted: the paper's "mispromotion"
    result(1, 1, 2.5)  # rung1 n=1
    step(("start",))
    result(4, 0, 6.0)  # n=5: top 1 = {3} (promoted)
    step(("start",))
    result(5, 0, 0.5)  # n=6: top 2 = {5, 3}: 5 not promoted
    step(("promote", 5, 0, 1))
    result(3, 1, 0.9)
    result(5, 1, 0.4)  # rung1 n=3: top 1 = {5}
    step(("promote", 5, 1, 2))
    step(("start",))


@pytest.mark.parametrize(
    ("rung_values", "loss", "expected", "rank", "threshold"),
    [
        ([1.0, 2.0, 3.0], 1.0, DecisionKind.CONTINUE, 0, 1),  # tie with the best favours it
        ([1.0, 2.0, 3.0], 2.0, DecisionKind.STOP, 1, 1),
        ([1.0], 5.0, DecisionKind.STOP, 1, 1),  # n=2: max(floor(2/3), 1) = 1
        ([], 5.0, DecisionKind.CONTINUE, 0, 1),  # alone: rank 0 < 1
        ([1.0, 2.0, 3.0, 4.0, 5.0], 2.0, DecisionKind.CONTINUE, 1, 2),  # n=6: top 2
    ],
    ids=["tie-best", "second-of-4", "worse-of-2", "first", "top-2-of-6"],
)
def test_asha_stopping_rule(rung_values, loss, expected, rank, threshold):
    rule = Asha(1, 9, 3, stopping=True)
    values = dict(enumerate(rung_values))
    values[99] = loss  # the trial's own value is recorded before it is judged
    snap = FakeSnapshot(rungs={(0, 0): values})
    decision = rule.judge(snap, 0, 0, RungEntry(loss, 99))
    assert decision.kind is expected
    assert (decision.reason.rank, decision.reason.threshold) == (rank, threshold)


def test_asha_stopping_form_judges_a_multi_rung_jump_at_each_rung_in_order():
    doc = make_document({"type": "asha", "form": "stopping", "max_resource": 27})
    driver = Driver(doc, x_objective)
    store = driver.store
    first = driver.claim()
    assert first.job.to_resource == 27
    # trial 0 reports straight at step 9: judged at rung 0 (1) and rung 1 (3), then rung 2 (9)
    decision = co.report(store, first.job.id, first.lease_token, 9, 0.5, driver.tick())
    assert decision.kind is DecisionKind.CONTINUE
    assert [
        r.rung for r in sorted(store.rung_results(driver.experiment.id), key=lambda r: r.rung)
    ] == [0, 1, 2]
    second = driver.claim()
    co.report(store, second.job.id, second.lease_token, 1, 0.1, driver.tick())  # better at rung 0
    decision = co.report(store, second.job.id, second.lease_token, 3, 0.9, driver.tick())
    assert decision.kind is DecisionKind.STOP  # worse than trial 0 at rung 1 (n=2, top 1)
    assert decision.reason.rung == 1
    assert store.get_trial(second.trial.id).state is TrialState.STOPPED


def test_non_finite_report_stops_the_trial_and_ranks_worst():
    doc = make_document({"type": "asha", "max_resource": 9})
    driver = Driver(doc, x_objective)
    a = driver.claim()
    decision = co.report(driver.store, a.job.id, a.lease_token, 1, math.nan, driver.tick())
    assert decision.kind is DecisionKind.STOP
    (result,) = driver.store.rung_results(driver.experiment.id)
    assert result.loss == math.inf and result.closed
    # two finite results later, nothing diverged is ever promoted
    for value in (0.3, 0.2):
        b = driver.claim()
        co.complete(driver.store, b.job.id, b.lease_token, driver.tick(), value)
    c = driver.claim()
    assert c.job.rung == 1 and c.trial.number == 2  # best of 3 (0.2), not the NaN


def test_pasha_unlocks_the_next_rung_when_the_top_two_rungs_disagree():
    rule = Pasha(1, 27, 3)
    snap = FakeSnapshot(n_trials=9, n_active=1)
    snap.rungs[(0, 0)] = {n: float(n + 1) for n in range(9)}
    snap.promoted |= {(0, 0, 0), (0, 0, 1), (0, 0, 2)}
    snap.rungs[(0, 1)] = {0: 1.0, 1: 2.0, 2: 3.0}  # same order: stable, top stays rung 1
    action = rule.next_action(snap)
    assert action.scheduler_state is None
    assert isinstance(action, StartTrial)  # rung 1 is the top: nothing promoted from it
    snap.rungs[(0, 1)] = {0: 3.0, 1: 2.0, 2: 2.5}  # order changed: unlock rung 2
    action = rule.next_action(snap)
    assert action.scheduler_state == {"top_rung": 2, "epsilon": 0.0}
    snap.scheduler_state = action.scheduler_state
    action = rule.next_action(snap)
    assert isinstance(action, Promote)
    assert (action.trial_number, action.from_rung, action.rung) == (1, 1, 2)


def test_async_hyperband_draws_brackets_in_proportion_to_hyperband_n():
    rule = Asha(1, 81, 3, bracket_rates=(0, 1, 2, 3, 4), seed=3)
    draws = Counter(rule.draw_bracket(n) for n in range(14_300))
    expected = {0: 81, 1: 34, 2: 15, 3: 8, 4: 5}
    for s, n_s in expected.items():
        assert abs(draws[s] / 14_300 - n_s / 143) < 0.02
    assert [rule.draw_bracket(n) for n in range(50)] == [rule.draw_bracket(n) for n in range(50)]


def test_budget_spent_with_nothing_active_finishes():
    rule = Asha(1, 9, 3)
    assert isinstance(rule.next_action(FakeSnapshot(can_start=False, n_active=0)), Finished)
    assert isinstance(rule.next_action(FakeSnapshot(can_start=False, n_active=2)), Wait)
