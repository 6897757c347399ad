"""Invariants of the promotion rules, checked by brute force at every decision.

Experiments run through the coordinator on a MemoryStore with several jobs in flight; which
job finishes next and what it reports are drawn by Hypothesis.
"""

from __future__ import annotations

import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tuner.coordinator as co
from tests.factories import make_document
from tuner.domain import TrialState
from tuner.storage.memory import MemoryStore

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rung_view(store: MemoryStore, experiment_id: int):
    rungs: dict[tuple[int, int], list] = {}
    for result in store.rung_results(experiment_id):
        rungs.setdefault((result.bracket, result.rung), []).append(result)
    for rows in rungs.values():
        rows.sort(key=lambda r: (r.loss, r.trial_number))
    return rungs


def _run(document, seed: int, workers: int, nan_rate: float = 0.0, check=None):
    rnd = random.Random(seed)
    store = MemoryStore()
    experiment = co.create_experiment(store, document, 0.0)
    now = 0.0
    running: list[co.Assignment] = []
    log = []
    for _ in range(5000):
        while len(running) < workers:
            now += 1
            before = _rung_view(store, experiment.id)
            result = co.claim(store, experiment.id, "w", now)
            if not isinstance(result, co.Assignment):
                break
            log.append((result.trial.number, result.job.rung, result.job.from_resource))
            if check is not None:
                check(before, result, store, experiment)
            running.append(result)
        if not running:
            assert isinstance(co.claim(store, experiment.id, "w", now + 1), co.ExperimentOver)
            return store, experiment, log
        done = running.pop(rnd.randrange(len(running)))
        value = math.nan if rnd.random() < nan_rate else rnd.random()
        now += 1
        co.complete(store, done.job.id, done.lease_token, now, value)
    raise AssertionError("experiment did not end")


def _asha_check(eta: int):
    def check(before, assignment, store, experiment):
        job = assignment.job
        if job.from_resource > 0:  # a promotion from rung job.rung - 1
            k = job.rung - 1
            rows = before[(job.bracket, k)]
            top = rows[: len(rows) // eta]
            assert assignment.trial.number in [r.trial_number for r in top]
            mine = next(r for r in rows if r.trial_number == assignment.trial.number)
            assert not mine.promoted and math.isfinite(mine.loss)
        else:  # a new trial: every rung's top 1/eta was promoted already
            for (_bracket, rung), rows in before.items():
                if rung == len(store_levels(experiment)) - 1:
                    continue
                for r in rows[: len(rows) // eta]:
                    assert r.promoted or r.closed or not math.isfinite(r.loss)

    return check


def store_levels(experiment):
    from tuner.config import build_scheduler

    return build_scheduler(experiment.config).levels


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    workers=st.integers(1, 12),
    eta=st.sampled_from([2, 3, 4]),
    max_resource=st.sampled_from([8, 9, 27, 30]),
    max_trials=st.integers(5, 60),
    nan_rate=st.sampled_from([0.0, 0.1]),
    kind=st.sampled_from(["asha", "async_hyperband"]),
)
def test_asha_promotes_only_from_the_top_and_never_twice(
    seed, workers, eta, max_resource, max_trials, nan_rate, kind
):
    doc = make_document(
        {"type": kind, "eta": eta, "max_resource": max_resource},
        budget={"max_trials": max_trials},
    )
    store, experiment, log = _run(doc, seed, workers, nan_rate, check=_asha_check(eta))
    assert len(log) == len(set(log))  # never the same (trial, rung) job twice
    assert all(t.state.is_finished() for t in store.trials(experiment.id))


@SETTINGS
@given(seed=st.integers(0, 10_000), workers=st.integers(1, 40), eta=st.sampled_from([2, 3]))
def test_sync_sha_promotes_exactly_floor_n_over_eta(seed, workers, eta):
    doc = make_document({"type": "hyperband", "eta": eta, "max_resource": 8 if eta == 2 else 9})
    store, experiment, _ = _run(doc, seed, workers)
    for (bracket, rung), (n, promoted) in store.rung_counts(experiment.id).items():
        top = len(store_levels(experiment)) - 1
        assert promoted == (n // eta if rung < top else 0), (bracket, rung, n, promoted)
    states = {t.state for t in store.trials(experiment.id)}
    assert states <= {TrialState.COMPLETED, TrialState.STOPPED}


@SETTINGS
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["asha", "async_hyperband", "pasha"]))
def test_same_seed_gives_the_same_decisions(seed, kind):
    doc = make_document({"type": kind, "max_resource": 27}, budget={"max_trials": 30}, seed=seed)
    first = _run(doc, seed, workers=4)[2]
    second = _run(doc, seed, workers=4)[2]
    assert first == second


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    workers=st.integers(1, 8),
    max_trials=st.integers(3, 40),
)
def test_stopping_form_every_survivor_was_within_the_top(seed, workers, max_trials):
    doc = make_document(
        {"type": "asha", "form": "stopping", "max_resource": 9}, budget={"max_trials": max_trials}
    )
    rnd = random.Random(seed)
    store = MemoryStore()
    experiment = co.create_experiment(store, doc, 0.0)
    now, running = 0.0, []
    for _ in range(2000):
        while len(running) < workers:
            now += 1
            got = co.claim(store, experiment.id, "w", now)
            if not isinstance(got, co.Assignment):
                break
            running.append([got, 0])
        if not running:
            break
        slot = running[rnd.randrange(len(running))]
        assignment, step = slot
        step += 1
        slot[1] = step
        now += 1
        if step == 9:
            co.complete(store, assignment.job.id, assignment.lease_token, now, rnd.random())
            running.remove(slot)
            continue
        decision = co.report(
            store, assignment.job.id, assignment.lease_token, step, rnd.random(), now
        )
        if step in (1, 3):  # a rung: the decision follows the rule against the rung as stored
            rows = sorted(
                r.loss
                for r in store.rung_results(experiment.id)
                if r.rung == (0 if step == 1 else 1)
            )
            mine = store.get_rung_result(assignment.trial.id, 0 if step == 1 else 1).loss
            better = sum(1 for v in rows if v < mine)
            assert (decision.kind == "continue") == (better < max(len(rows) // 3, 1))
        if decision.kind == "stop":
            running.remove(slot)
    assert all(t.state.is_finished() for t in store.trials(experiment.id))
