"""A judged report of a known job writes its rung result ahead (PostgreSQL: in the round
trip of the report's own writes, guarded by the judgement's conditions in the rows). The
answers and rows are those of the report that reads the job first and writes one statement
at a time, on every store, with stale tokens, repeats, conflicting values, steps past a rung
unreported (or reached at once), stops by hand and a cancel in between."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

import tuner.coordinator as co
from tests.conftest import DB_PARAMS, StoreFactory
from tests.factories import make_document
from tuner.coordinator.outcomes import Context
from tuner.coordinator.report import KnownJob, _rung_ahead
from tuner.domain import DecisionKind, Report
from tuner.errors import DuplicateReport, LeaseExpired
from tuner.storage import compound
from tuner.store import RungAhead

SCHEDULER = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9}


def run(
    store_factory: StoreFactory, form: str, *, use_known: bool, seed: int
) -> tuple[list[Any], list[Any], list[Any]]:
    """One experiment to its end, each call a transaction; what it answered and left."""
    doc = make_document({**SCHEDULER, "form": form}, budget={"max_trials": 24},
                        lease_ttl_s=10_000)
    with store_factory() as store:
        experiment = co.create_experiment(store, doc, 0.0)
        ctx = Context.load(store, experiment.id, lock=False)
    rnd, log, now = random.Random(seed), [], 0.0

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        with store_factory() as store:
            return fn(store, *args, **kwargs)

    while True:
        now += 1
        a = call(co.claim, experiment.id, "w", now)
        if not isinstance(a, co.Assignment):
            break
        known = KnownJob(a.job, ctx) if use_known else None
        steps = list(range(a.job.from_resource + 1, a.job.to_resource + 1))
        if rnd.random() < 0.3 and len(steps) > 2:
            steps = sorted({*steps[::2], steps[-1]})  # some pass a rung unreported
        elif rnd.random() < 0.2 and steps[-1] > 3:
            steps = [s for s in steps if s >= 3]  # the first report is at the second rung
        for step in steps:
            value, now = rnd.random(), now + 1
            if rnd.random() < 0.05 or (a.trial.number % 7 == 3 and step == steps[0]):
                call(co.stop_trial, a.trial.id, now)  # by hand, before this report
            if a.trial.number == 20 and step == steps[0]:
                call(co.change_state, experiment.id, "cancel", now)
            decision = call(co.report, a.job.id, a.lease_token, step, value, now, known=known)
            log.append((a.trial.number, step, decision.kind, decision.reason.as_dict()))
            with pytest.raises(LeaseExpired):
                call(co.report, a.job.id, "stale", step, value, now, known=known)
            again = call(co.report, a.job.id, a.lease_token, step, value, now, known=known)
            log.append(("again", again.kind, again.reason.as_dict()))
            with pytest.raises(DuplicateReport):
                call(co.report, a.job.id, a.lease_token, step, value + 1, now, known=known)
            if decision.kind is DecisionKind.STOP:
                break
        else:
            done = call(co.complete, a.job.id, a.lease_token, now := now + 1)
            log.append(("complete", done.kind, done.reason.as_dict()))
    with store_factory() as store:
        trials, results = everything(store, experiment.id)
    return log, trials, results


def everything(store: Any, experiment_id: int) -> tuple[list[Any], list[Any]]:
    """The experiment's trials and rung results, through any store's own interface."""
    n = store.get_experiment(experiment_id).n_trials
    trials = [store.get_trial_by_number(experiment_id, number) for number in range(n)]
    found = [store.get_rung_result(t.id, rung) for t in trials for rung in range(3)]
    results = sorted(
        (r.bracket, r.rung, r.trial_number, r.loss, r.promoted, r.closed)
        for r in found if r is not None
    )
    return [(t.number, t.state, t.rung, t.best_loss) for t in trials], results


@pytest.mark.parametrize("form", ["stopping", "promotion"])
def test_reports_of_known_jobs_answer_as_reports_that_read_first(
    store_factory: StoreFactory, store_kind: str, form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = []
    took_ahead = compound.took_ahead
    monkeypatch.setattr(compound, "took_ahead", lambda *a: taken.append(a) or took_ahead(*a))
    for seed in (5, 6):
        taken.clear()
        plain = run(store_factory, form, use_known=False, seed=seed)
        assert not taken  # only known jobs' reports write ahead
        known = run(store_factory, form, use_known=True, seed=seed)
        kinds = {entry[2] for entry in plain[0] if len(entry) == 4}
        judged = {DecisionKind.STOP} if form == "stopping" else set()  # promotion: at the end
        assert len(plain[0]) > 50
        assert kinds >= {DecisionKind.CONTINUE, *judged}
        rules = {entry[3]["rule"] for entry in plain[0] if len(entry) == 4}
        assert {"manual_stop", "cancelled"} <= rules
        assert known == plain
    # The stopping form's judged reports wrote their rung results ahead on PostgreSQL (the
    # others have no round trips to save), and the promotion form judges at completion.
    assert bool(taken) == (store_kind == "postgres" and form == "stopping")


@pytest.mark.parametrize("store_kind", [DB_PARAMS[1]], indirect=True)
def test_a_rung_result_written_ahead_must_be_the_one_added(store_factory: StoreFactory) -> None:
    """The store's safety net: a result written ahead that the caller then does not add, or
    adds with other values, fails the transaction (it rolls back) instead of standing."""
    doc = make_document({**SCHEDULER, "form": "stopping"}, lease_ttl_s=10_000)
    with store_factory() as store:
        experiment = co.create_experiment(store, doc, 0.0)
        ctx = Context.load(store, experiment.id, lock=False)
    jobs = []
    for now in (1.0, 2.0, 3.0, 4.0):
        with store_factory() as store:
            jobs.append(co.claim(store, experiment.id, "w", now))
    for a in jobs[:2]:  # statements get their plans on their second run: then they pair
        with store_factory() as store:
            co.report(store, a.job.id, a.lease_token, 1, 0.5, 5.0, known=KnownJob(a.job, ctx))

    def write_ahead(store: Any, a: co.Assignment) -> RungAhead:
        ahead = _rung_ahead(KnownJob(a.job, ctx), 1, 0.25, 6.0)
        assert ahead is not None
        store.record_step(
            Report(a.job.trial_id, a.job.id, 1, 0.25, {}, 6.0), co.hash_token(a.lease_token),
            6.0, 7.0, lock_experiment=True, rung_ahead=ahead, last_value=0.25,
        )
        assert store._ahead  # paired and inserted
        return ahead

    with pytest.raises(RuntimeError, match="written ahead and not added"), store_factory() as s:
        write_ahead(s, jobs[2])
    def add_another(store: Any) -> None:
        ahead = write_ahead(store, jobs[3])
        other = dataclasses.replace(ahead.result, loss=0.75, value=0.75)
        store.add_rung_result(experiment.id, other, rank_eta=ahead.rank_eta)

    with pytest.raises(RuntimeError, match="differs from the one added"), store_factory() as s:
        add_another(s)
    with store_factory() as store:  # both rolled back
        numbers = {r[2] for r in everything(store, experiment.id)[1]}
        assert numbers == {jobs[0].trial.number, jobs[1].trial.number}
        assert store.get_report(jobs[2].job.trial_id, 1) is None
        assert store.get_report(jobs[3].job.trial_id, 1) is None
