"""One contract suite for every Store: memory, SQLite and PostgreSQL must agree."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import StoreFactory
from tests.factories import make_document
from tuner.config import parse_config
from tuner.domain import (
    DecisionKind,
    DecisionRecord,
    ExperimentState,
    JobState,
    Report,
    RungEntry,
    RungResult,
    TrialState,
)
from tuner.errors import ConflictError, NotFound, ParamsSeen
from tuner.store import Judging, Lease, RungStop, StepBounds

ASHA = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 27}


def make_config(**overrides: Any) -> Any:
    return parse_config(make_document(ASHA, **overrides))


def new_experiment(store: Any, now: float = 100.0) -> int:
    experiment_id: int = store.create_experiment(make_config(), now).id
    return experiment_id


def result(trial: Any, rung: int, loss: float, now: float = 1.0, **flags: bool) -> RungResult:
    return RungResult(
        bracket=trial.bracket,
        rung=rung,
        trial_number=trial.number,
        trial_id=trial.id,
        loss=loss,
        value=loss,
        promoted=flags.get("promoted", False),
        closed=flags.get("closed", False),
        created_at=now,
        resource=3**rung,
    )


# ---- experiments ---------------------------------------------------------------------------
def test_store_experiment_round_trip(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        created = store.create_experiment(make_config(name="exp"), 100.5)
    with store_factory() as store:
        got = store.get_experiment(created.id, lock=True)
        assert got == created
        assert got.name == "exp"
        assert got.config == make_config(name="exp")
        assert (got.state, got.n_trials, got.resource_used, got.ended_at) == (
            ExperimentState.RUNNING,
            0,
            0,
            None,
        )
        store.set_scheduler_state(created.id, {"top_rung": 2})
        store.add_resource_used(created.id, 5)
        store.add_resource_used(created.id, 7)
        store.set_experiment_state(created.id, ExperimentState.PAUSED, 101.0)
    with store_factory() as store:
        got = store.get_experiment(created.id)
        assert (got.state, got.scheduler_state, got.resource_used, got.ended_at) == (
            ExperimentState.PAUSED,
            {"top_rung": 2},
            12,
            None,
        )
        store.set_experiment_state(created.id, ExperimentState.CANCELLED, 102.25)
        assert store.get_experiment(created.id).ended_at == 102.25


def test_store_unknown_ids_raise_not_found(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        calls: list[Callable[[], object]] = [
            lambda: store.get_experiment(999),
            lambda: store.get_trial(999),
            lambda: store.get_trial_by_number(experiment_id, 0),
            lambda: store.get_job(999),
            lambda: store.update_trial(999, 1.0, retries=1),
            lambda: store.create_trial(999, 0, {}, "k", 1.0),
            lambda: store.mark_promoted(experiment_id, 0, 0, 0),
            lambda: store.close_rung_result(experiment_id, 0, 0, 0),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                call()


# ---- trials --------------------------------------------------------------------------------
def test_store_trial_round_trip(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        t0 = store.create_trial(experiment_id, 0, {"x": 0.5, "a": "b"}, "key0", 1.0)
        t1 = store.create_trial(experiment_id, 1, {"x": 0.25}, "key1", 2.0)
        assert (t0.number, t1.number) == (0, 1)
        assert t0.state is TrialState.PENDING and t0.rung == -1 and t0.best_loss is None
    with store_factory() as store:
        assert store.get_experiment(experiment_id).n_trials == 2
        assert store.get_trial(t0.id) == t0
        assert list(store.get_trial(t0.id).params) == ["x", "a"]  # key order survives
        assert store.get_trial_by_number(experiment_id, 1) == t1
        assert store.has_params(experiment_id, "key1")
        assert not store.has_params(experiment_id, "nope")
        assert store.count_active(experiment_id) == 2
        updated = store.update_trial(
            t0.id,
            5.0,
            state=TrialState.PAUSED,
            rung=1,
            resource=3,
            checkpoint="s3://c",
            checkpoint_step=3,
            best_loss=math.inf,
            last_value=math.nan,
            retries=2,
            stop_requested=True,
        )
        assert updated.updated_at == 5.0 and updated.best_loss == math.inf
        assert math.isnan(updated.last_value)
    with store_factory() as store:
        got = store.get_trial(t0.id)
        assert (got.state, got.rung, got.resource, got.checkpoint, got.checkpoint_step) == (
            TrialState.PAUSED,
            1,
            3,
            "s3://c",
            3,
        )
        assert got.best_loss == math.inf and math.isnan(got.last_value)
        assert (got.retries, got.stop_requested, got.updated_at) == (2, True, 5.0)
        assert store.count_active(experiment_id) == 1
        store.update_trial(t1.id, 6.0, state=TrialState.COMPLETED, ended_at=6.0, best_loss=-0.5)
        assert [t.id for t in store.unfinished_trials(experiment_id)] == [t0.id]
        assert store.get_trial(t1.id).best_loss == -0.5


# ---- jobs ----------------------------------------------------------------------------------
def test_store_job_conflict_keeps_transaction_usable(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(experiment_id, 0, {}, "k", 1.0)
        job = store.create_job(trial, 0, 0, 1, None, 0, 2.0)
        with pytest.raises(ConflictError):
            store.create_job(trial, 0, 0, 1, None, 1, 3.0)
        store.update_trial(trial.id, 4.0, retries=1)  # the transaction goes on
    with store_factory() as store:
        assert store.get_trial(trial.id).retries == 1
        assert store.active_job_of_trial(trial.id) == job
        assert job.state is JobState.QUEUED and job.trial_number == 0 and job.attempt == 0


def test_store_job_lease_renew_end(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trials = [store.create_trial(experiment_id, 0, {}, f"k{i}", 1.0) for i in range(3)]
        jobs = [store.create_job(t, 0, 0, 1, "ck", 0, 2.0 + i) for i, t in enumerate(trials)]
    with store_factory() as store:
        assert store.next_queued_job(experiment_id) == jobs[0]
        leased = store.lease_job(jobs[0].id, "w1", "hash", 50.0)
        assert (leased.state, leased.worker_id, leased.lease_expires_at, leased.token_hash) == (
            JobState.LEASED,
            "w1",
            50.0,
            "hash",
        )
        with pytest.raises(ConflictError):
            store.lease_job(jobs[0].id, "w2", "other", 60.0)
        assert store.next_queued_job(experiment_id) == jobs[1]
    with store_factory() as store:
        assert store.renew_lease(jobs[0].id, "wrong", 10.0, 70.0) is None
        assert store.renew_lease(jobs[0].id, "hash", 50.5, 70.0) is None  # expired
        renewed = store.renew_lease(jobs[0].id, "hash", 50.0, 70.0)  # at the edge: alive
        assert renewed is not None and renewed.lease_expires_at == 70.0
        assert store.renew_lease(jobs[1].id, "hash", 10.0, 70.0) is None  # not leased
        assert store.end_job(jobs[0].id, JobState.DONE, 71.0)
        assert not store.end_job(jobs[0].id, JobState.FAILED, 72.0)
        assert store.get_job(jobs[0].id).state is JobState.DONE
        assert store.renew_lease(jobs[0].id, "hash", 10.0, 80.0) is None
        assert store.active_job_of_trial(trials[0].id) is None
        assert store.end_job(jobs[1].id, JobState.CANCELLED, 73.0)  # QUEUED -> CANCELLED
        assert store.next_queued_job(experiment_id) == jobs[2]
        again = store.create_job(trials[0], 1, 1, 3, "ck", 0, 74.0)  # a new live job is fine
        assert store.active_job_of_trial(trials[0].id) == again


def test_store_expired_jobs_oldest_first(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        a, b = new_experiment(store), new_experiment(store)
        expiries = {a: [30.0, 10.0, 99.0], b: [20.0, 10.0]}
        jobs = {}
        for experiment_id, times in expiries.items():
            for i, expires in enumerate(times):
                trial = store.create_trial(experiment_id, 0, {}, f"k{i}", 1.0)
                job = store.create_job(trial, 0, 0, 1, None, 0, 1.0)
                jobs[(experiment_id, i)] = store.lease_job(job.id, "w", "h", expires)
        queued_trial = store.create_trial(a, 0, {}, "q", 1.0)
        store.create_job(queued_trial, 0, 0, 1, None, 0, 1.0)
    with store_factory() as store:
        got = store.expired_jobs(50.0, 10)
        want = [jobs[(a, 1)], jobs[(b, 1)], jobs[(b, 0)], jobs[(a, 0)]]
        assert [j.id for j in got] == [j.id for j in want]
        assert [j.id for j in store.expired_jobs(50.0, 2)] == [j.id for j in want[:2]]
        assert store.expired_jobs(10.0, 10) == []  # strictly before now


def test_store_expire_job_rechecks_the_lease(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(experiment_id, 0, {}, "k", 1.0)
        job = store.create_job(trial, 0, 0, 1, None, 0, 1.0)
        assert not store.expire_job(job.id, 100.0)  # queued, not leased
        store.lease_job(job.id, "w", "h", 10.0)
        assert not store.expire_job(job.id, 10.0)  # not yet ended at 10.0
        assert store.renew_lease(job.id, "h", 9.0, 20.0) is not None
        assert not store.expire_job(job.id, 15.0)  # renewed meanwhile: the report wins
        assert store.expire_job(job.id, 20.5)
        assert not store.expire_job(job.id, 30.0)
        assert store.get_job(job.id).state is JobState.EXPIRED
        assert store.active_job_of_trial(trial.id) is None
        with pytest.raises(NotFound):
            store.expire_job(999, 1.0)


def test_store_creates_a_running_trial_with_a_leased_job(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(
            experiment_id, 0, {"x": 1}, "k", 1.0, state=TrialState.RUNNING, add_resource_used=3
        )
        assert trial.state is TrialState.RUNNING and trial.number == 0
        job = store.create_job(trial, 0, 0, 3, None, 0, 2.0, Lease("w", "hash", 60.0))
        assert (job.state, job.worker_id, job.token_hash, job.lease_expires_at) == (
            JobState.LEASED,
            "w",
            "hash",
            60.0,
        )
        with pytest.raises(ConflictError):  # still one live job per trial
            store.create_job(trial, 0, 0, 3, None, 0, 2.0, Lease("w2", "h2", 70.0))
    with store_factory() as store:
        got = store.get_experiment(experiment_id)
        assert (got.n_trials, got.resource_used) == (1, 3)
        assert store.get_trial(trial.id) == trial
        assert store.get_job(job.id) == job
        assert store.next_queued_job(experiment_id) is None
        assert store.count_active(experiment_id) == 1
        assert [j.id for j in store.expired_jobs(61.0, 10)] == [job.id]
        assert store.renew_lease(job.id, "hash", 59.0, 90.0) is not None
        snap = store.snapshot(store.get_experiment(experiment_id), can_start=True)
        assert snap.n_active == 1 and snap.n_in_bracket(0) == 1  # n_active counted when asked


def test_store_load_job_reads_trial_experiment_and_report(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(experiment_id, 0, {"x": 1}, "k", 1.0)
        job = store.create_job(trial, 0, 0, 3, "ck", 0, 2.0)
        store.add_report(Report(trial.id, job.id, 1, math.nan, {"a": 1}, 3.0))
        store.add_report(Report(trial.id, job.id, 3, 0.5, {}, 4.0))
    with store_factory() as store:
        found = store.load_job(job.id)  # the report at to_resource
        assert (found.job, found.trial) == (job, trial)
        assert found.experiment == store.get_experiment(experiment_id)
        assert found.report == Report(trial.id, job.id, 3, 0.5, {}, 4.0)
        at_one = store.load_job(job.id, step=1).report
        assert at_one is not None and math.isnan(at_one.value) and at_one.metrics == {"a": 1}
        assert store.load_job(job.id, step=2).report is None
        with pytest.raises(NotFound):
            store.load_job(999)


def test_store_promote_marks_runs_and_counts(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        t = [store.create_trial(experiment_id, 0, {"i": i}, f"k{i}", 1.0) for i in range(3)]
        for i, trial in enumerate(t):
            store.add_rung_result(experiment_id, result(trial, 0, 0.1 * i))
            store.update_trial(trial.id, 2.0, state=TrialState.PAUSED, rung=0)
    with store_factory() as store:
        assert store.next_queued_job(experiment_id) is None  # reads the counters too
        promoted = store.promote(experiment_id, 0, 0, 1, 5.0, add_resource_used=2)
        assert (promoted.id, promoted.state, promoted.updated_at) == (
            t[1].id,
            TrialState.RUNNING,
            5.0,
        )
        snap = store.snapshot(store.get_experiment(experiment_id), can_start=True)
        assert snap.best_unpromoted(0, 0, 3) == RungEntry(0.0, 0, 0)
        assert snap.best_unpromoted(0, 0, 1) == RungEntry(0.0, 0, 0)
        assert store.get_experiment(experiment_id).resource_used == 2
        with pytest.raises(ConflictError):
            store.promote(experiment_id, 0, 0, 1, 6.0)
        with pytest.raises(NotFound):
            store.promote(experiment_id, 1, 0, 0, 6.0)  # wrong bracket
        store.close_rung_result(experiment_id, 0, 0, 0)
        with pytest.raises(ConflictError):
            store.promote(experiment_id, 0, 0, 0, 6.0)
    with store_factory() as store:
        assert store.get_rung_result(t[1].id, 0).promoted
        assert store.get_trial(t[1].id).state is TrialState.RUNNING
        store.next_queued_job(experiment_id)
        store.promote(experiment_id, 0, 0, 2, 7.0)
        store.add_rung_result(experiment_id, result(t[1], 1, 0.5))  # writes after the prefetch
        snap = store.snapshot(store.get_experiment(experiment_id), can_start=True)
        assert (snap.rung_size(0, 0), snap.rung_size(0, 1)) == (3, 1)
        assert snap.best_unpromoted(0, 0, 3) is None  # 0 closed, 1 and 2 promoted
        assert snap.best_unpromoted(0, 1, 1) == RungEntry(0.5, 1, 0)


# ---- reports -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value", [0.25, -3.0, math.inf, -math.inf, math.nan], ids=["pos", "neg", "inf", "-inf", "nan"]
)
def test_store_report_round_trip_and_conflict(store_factory: StoreFactory, value: float) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(experiment_id, 0, {}, "k", 1.0)
        job = store.create_job(trial, 0, 0, 3, None, 0, 1.0)
        store.add_report(Report(trial.id, job.id, 1, value, {"acc": 0.5}, 2.0))
        with pytest.raises(ConflictError):
            store.add_report(Report(trial.id, job.id, 1, 1.0, {}, 3.0))
        store.add_report(Report(trial.id, job.id, 2, 1.0, {}, 3.0))
    with store_factory() as store:
        got = store.get_report(trial.id, 1)
        assert got is not None
        assert (got.trial_id, got.job_id, got.step, got.metrics, got.created_at) == (
            trial.id,
            job.id,
            1,
            {"acc": 0.5},
            2.0,
        )
        assert got.value == value or (math.isnan(got.value) and math.isnan(value))
        assert store.get_report(trial.id, 3) is None
        assert store.get_report(trial.id, 2) is not None


def test_store_supersede_report_frees_the_step_once(store_factory: StoreFactory) -> None:
    """A retry's report replaces the report an ended job stored at the step: the old row
    leaves ``reports`` (the step is free again) once, however often it is asked."""
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(experiment_id, 0, {}, "k", 1.0)
        old_job = store.create_job(trial, 0, 0, 3, None, 0, 1.0)
        store.end_job(old_job.id, JobState.FAILED, 1.8)
        new_job = store.create_job(trial, 0, 1, 3, None, 0, 2.0)
        stored = Report(trial.id, old_job.id, 2, 0.5, {"acc": 0.7}, 1.5)
        store.add_report(stored)
        store.supersede_report(stored, new_job.id, 3.0)
        store.supersede_report(stored, new_job.id, 3.5)  # moved already: nothing happens
        assert store.get_report(trial.id, 2) is None
        store.add_report(Report(trial.id, new_job.id, 2, 0.6, {}, 4.0))
        # Only the report of the job it names is moved.
        store.supersede_report(stored, new_job.id, 5.0)
    with store_factory() as store:
        current = store.get_report(trial.id, 2)
        assert current is not None and (current.job_id, current.value) == (new_job.id, 0.6)


# ---- rungs and decisions ----------------------------------------------------------------------
def test_store_rung_results_promote_and_close(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        t = [store.create_trial(experiment_id, 0, {"i": i}, f"k{i}", 1.0) for i in range(3)]
        store.add_rung_result(experiment_id, result(t[0], 0, 0.5))
        store.add_rung_result(experiment_id, result(t[1], 0, math.inf))
        store.add_rung_result(experiment_id, result(t[2], 0, 0.1))
        with pytest.raises(ConflictError):
            store.add_rung_result(experiment_id, result(t[0], 0, 0.7))
        store.add_rung_result(experiment_id, result(t[0], 1, 0.4))  # still usable
    with store_factory() as store:
        assert store.get_rung_result(t[0].id, 0) == result(t[0], 0, 0.5)
        assert store.get_rung_result(t[1].id, 0).loss == math.inf
        assert store.get_rung_result(t[1].id, 1) is None
        store.mark_promoted(experiment_id, 0, 0, 2)
        with pytest.raises(ConflictError):
            store.mark_promoted(experiment_id, 0, 0, 2)
        with pytest.raises(ConflictError):
            store.close_rung_result(experiment_id, 0, 0, 2)
        with pytest.raises(NotFound):
            store.mark_promoted(experiment_id, 1, 0, 0)  # wrong bracket
        store.close_rung_result(experiment_id, 0, 0, 1)
        store.close_rung_result(experiment_id, 0, 0, 1)  # closing twice is a no-op
        with pytest.raises(ConflictError):
            store.mark_promoted(experiment_id, 0, 0, 1)
    with store_factory() as store:
        assert store.get_rung_result(t[2].id, 0).promoted
        closed = store.get_rung_result(t[1].id, 0)
        assert closed.closed and not closed.promoted
        snap = store.snapshot(store.get_experiment(experiment_id), can_start=True, n_active=3)
        assert snap.rung_size(0, 0) == 3 and snap.rung_size(0, 1) == 1
        assert snap.best_unpromoted(0, 0, 2) == RungEntry(0.5, 0, 1)
        assert snap.best_unpromoted(0, 0, 1) is None
        assert (snap.n_trials, snap.n_active, snap.can_start) == (3, 3, True)
        assert snap.n_in_bracket(0) == 3 and snap.n_in_bracket(1) == 0
        assert store.results_at_highest_level(experiment_id, 1) == (1, [({"i": 0}, 0.4)])
        rung, rows = store.results_at_highest_level(experiment_id, 2)
        assert rung == 0
        assert sorted(rows, key=lambda r: r[0]["i"]) == [
            ({"i": 0}, 0.5),
            ({"i": 1}, math.inf),
            ({"i": 2}, 0.1),
        ]
        assert store.results_at_highest_level(experiment_id, 4) is None


def test_store_add_decision(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial = store.create_trial(experiment_id, 0, {}, "k", 1.0)
        store.add_decision(DecisionRecord(trial.id, DecisionKind.STOP, {"rule": "x"}, 3, 2.0))
        store.add_decision(DecisionRecord(trial.id, DecisionKind.PAUSE, {"rule": "y"}, None, 3.0))
    with store_factory() as store:  # stored, in order, as given
        assert decisions_of(store, trial.id) == [
            (DecisionKind.STOP, {"rule": "x"}, 3),
            (DecisionKind.PAUSE, {"rule": "y"}, None),
        ]
        with pytest.raises(NotFound):
            store.add_decision(DecisionRecord(10**6, DecisionKind.STOP, {}, None, 4.0))


# ---- the snapshot against a brute-force reference -------------------------------------------
LOSSES = st.sampled_from([0.0, 0.1, 0.1, 0.5, -1.0, 2.0, math.inf])
ROWS = st.lists(
    st.tuples(st.integers(0, 1), LOSSES, st.sampled_from(["open", "open", "promoted", "closed"])),
    max_size=14,
)


def reference(rows: list[tuple[int, float, str]], bracket: int) -> list[tuple[float, int, str]]:
    """(loss, trial_number, status) of one bracket's rung, best first."""
    return sorted((loss, n, status) for n, (b, loss, status) in enumerate(rows) if b == bracket)


def ref_best_unpromoted(ordered: list[tuple[float, int, str]], top: int) -> RungEntry | None:
    for rank, (loss, n, status) in enumerate(ordered[: max(top, 0)]):
        if status == "open" and math.isfinite(loss):
            return RungEntry(loss, n, rank)
    return None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=ROWS, extra_flags=st.booleans())
def test_store_snapshot_matches_brute_force(
    store_factory: StoreFactory, rows: list[tuple[int, float, str]], extra_flags: bool
) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        for n, (bracket, loss, status) in enumerate(rows):
            trial = store.create_trial(experiment_id, bracket, {"n": n}, f"k{n}", 1.0)
            if extra_flags and status != "open":  # inserted already promoted or closed
                flags = {status: True}
                store.add_rung_result(experiment_id, result(trial, 0, loss, **flags))
                continue
            store.add_rung_result(experiment_id, result(trial, 0, loss))
        for n, (bracket, _, status) in enumerate(rows):
            if extra_flags or status == "open":
                continue
            if status == "promoted":
                store.mark_promoted(experiment_id, bracket, 0, n)
            else:
                store.close_rung_result(experiment_id, bracket, 0, n)
    with store_factory() as store:
        snap = store.snapshot(store.get_experiment(experiment_id), can_start=False, n_active=0)
        assert snap.n_trials == len(rows)
        for bracket in (0, 1):
            ordered = reference(rows, bracket)
            n = len(ordered)
            assert snap.n_in_bracket(bracket) == n
            assert snap.rung_size(bracket, 0) == n
            assert snap.rung_size(bracket, 1) == 0
            assert snap.rung_entries(bracket, 0) == [
                RungEntry(loss, number, i) for i, (loss, number, _) in enumerate(ordered)
            ]
            for top in range(-1, n + 2):
                assert snap.best_unpromoted(bracket, 0, top) == ref_best_unpromoted(ordered, top)
            for loss in (-math.inf, -1.0, 0.0, 0.1, 0.3, 2.0, 5.0, math.inf):
                better = sum(1 for value, _, _ in ordered if value < loss)
                for limit in range(0, n + 2):
                    got = snap.count_better(bracket, 0, loss, limit)
                    assert got == min(better, limit), (bracket, loss, limit)


# ---- end to end: the same experiment through the coordinator on each store --------------------
def test_store_coordinator_runs_identically(store_factory: StoreFactory) -> None:
    """Run ASHA through the coordinator on this store; the trial outcomes must be the ones a
    fresh MemoryStore produces."""
    import tuner.coordinator as co
    from tuner.storage.memory import MemoryStore

    doc = make_document(
        ASHA,
        budget={"max_trials": 20},
        space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
    )

    def objective(params: dict[str, Any], resource: int) -> float:
        return float((params["x"] - 0.3) ** 2 + 1.0 / resource)

    def drive(transaction: Any) -> list[tuple[int, str, int, float | None]]:
        clock = [0.0]

        def tick() -> float:
            clock[0] += 1.0
            return clock[0]

        with transaction() as store:
            experiment_id = co.create_experiment(store, doc, tick()).id
        for _ in range(1000):
            with transaction() as store:
                claimed = co.claim(store, experiment_id, "w", tick())
            if isinstance(claimed, co.ExperimentOver):
                break
            assert isinstance(claimed, co.Assignment)
            with transaction() as store:
                value = objective(claimed.trial.params, claimed.job.to_resource)
                co.complete(store, claimed.job.id, claimed.lease_token, tick(), value)
        with transaction() as store:
            out = []
            for number in range(store.get_experiment(experiment_id).n_trials):
                t = store.get_trial_by_number(experiment_id, number)
                out.append((t.number, t.state.value, t.resource, t.best_loss))
            return out

    memory = MemoryStore()

    def memory_transaction() -> Any:
        from contextlib import nullcontext

        return nullcontext(memory)

    assert drive(store_factory) == drive(memory_transaction)


# ---- concurrency -----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_store_lock_serialises_deciders(session_factory: Any) -> None:
    """16 threads, each in its own session, read a counter under the experiment lock and
    write it back plus one: no update may be lost."""
    from tuner.storage.sql import open_store

    with session_factory.begin() as session:
        experiment_id = new_experiment(open_store(session))
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                with session_factory.begin() as session:
                    store = open_store(session)
                    experiment = store.get_experiment(experiment_id, lock=True)
                    count = experiment.scheduler_state.get("count", 0)
                    store.set_scheduler_state(experiment_id, {"count": count + 1})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with session_factory.begin() as session:
        assert open_store(session).get_experiment(experiment_id).scheduler_state == {"count": 80}


# ---- the merged writes of the hot paths (one statement each on PostgreSQL) -----------------
def decisions_of(store: Any, trial_id: int) -> list[tuple[DecisionKind, dict[str, Any], Any]]:
    if hasattr(store, "decisions"):  # the memory store
        mine = (d for d in store.decisions() if d.trial_id == trial_id)
        return [(d.kind, dict(d.reason), d.step) for d in mine]
    from sqlalchemy import select

    from tuner.storage.sql.tables import DECISIONS

    d = DECISIONS.c
    rows = store.session.execute(
        select(d.kind, d.reason, d.step).where(d.trial_id == trial_id).order_by(d.id)
    )
    return [(DecisionKind(kind), dict(reason), step) for kind, reason, step in rows]


def leased_trial(
    store: Any, experiment_id: int, until: float = 50.0, key: str = "k"
) -> tuple[Any, Any]:
    trial = store.create_trial(experiment_id, 0, {}, key, 1.0, state=TrialState.RUNNING)
    job = store.create_job(trial, 0, 0, 9, None, 0, 2.0, Lease("w", "hash", until))
    return trial, job


def test_store_record_step_writes_all_or_nothing(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial, job = leased_trial(store, experiment_id)
    with store_factory() as store:
        step = Report(trial.id, job.id, 1, 0.25, {"acc": 0.9}, 10.0)
        updated = store.record_step(
            step, StepBounds("hash", 10.0), 70.0,
            last_value=0.25, checkpoint="ck1", checkpoint_step=1,
        )
        assert updated is not None
        assert (updated.last_value, updated.checkpoint, updated.checkpoint_step) == (
            0.25, "ck1", 1,
        )
        assert updated.updated_at == 10.0 and updated.state is TrialState.RUNNING
    with store_factory() as store:
        assert store.get_report(trial.id, 1) == step
        assert store.get_job(job.id).lease_expires_at == 70.0
        assert store.get_trial(trial.id) == updated
        missing = Report(trial.id, 999, 3, 1.0, {}, 13.0)
        with pytest.raises(NotFound):
            store.record_step(missing, StepBounds("hash", 13.0), 99.0)


def _refused(store: Any, report: Report, bounds: StepBounds, trial: Any, job: Any) -> None:
    """``record_step`` refused ``report`` and wrote nothing: no report, no renewal, the
    trial as it was."""
    lease_until = store.get_job(job.id).lease_expires_at
    assert store.record_step(report, bounds, 999.0, last_value=report.value) is None
    assert store.get_report(trial.id, report.step) != report
    assert store.get_job(job.id).lease_expires_at == lease_until
    assert store.get_trial(trial.id) == trial


# Each bound of a report's writes (tuner.store.StepBounds; the SQL guards of
# tuner.storage.sql.guards), refused alone, on every store.
def test_store_record_step_needs_the_token(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        trial, job = leased_trial(store, new_experiment(store))
        _refused(store, Report(trial.id, job.id, 1, 0.5, {}, 11.0), StepBounds("wrong", 11.0),
                 trial, job)


def test_store_record_step_needs_a_live_lease(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        trial, job = leased_trial(store, new_experiment(store), until=50.0)
        report = Report(trial.id, job.id, 1, 0.5, {}, 50.5)
        _refused(store, report, StepBounds("hash", 50.5), trial, job)
        assert store.record_step(report, StepBounds("hash", 50.0), 60.0) is not None  # the edge
    with store_factory() as store:  # a lease that ended by state, in time
        trial, job = leased_trial(store, new_experiment(store), until=50.0)
        store.end_job(job.id, JobState.RELEASED, 10.0)
        _refused(store, Report(trial.id, job.id, 1, 0.5, {}, 11.0), StepBounds("hash", 11.0),
                 trial, store.get_job(job.id))


def test_store_record_step_needs_a_new_step(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        trial, job = leased_trial(store, new_experiment(store))
        first = Report(trial.id, job.id, 1, 0.25, {}, 10.0)
        trial = store.record_step(first, StepBounds("hash", 10.0), 20.0, last_value=0.25)
        _refused(store, Report(trial.id, job.id, 1, 0.75, {}, 11.0), StepBounds("hash", 11.0),
                 trial, store.get_job(job.id))
        assert store.get_report(trial.id, 1) == first


def test_store_plain_write_needs_the_rungs_judged(store_factory: StoreFactory) -> None:
    """A plain write (``floor``) lands only on a trial judged up to ``floor``."""
    with store_factory() as store:
        trial, job = leased_trial(store, new_experiment(store))
        trial = store.update_trial(trial.id, 5.0, rung=0)
        _refused(store, Report(trial.id, job.id, 3, 0.5, {}, 11.0),
                 StepBounds("hash", 11.0, floor=1), trial, job)
        landed = store.record_step(Report(trial.id, job.id, 3, 0.5, {}, 12.0),
                                   StepBounds("hash", 12.0, floor=0), 20.0, last_value=0.5)
        assert landed is not None and landed.last_value == 0.5


def test_store_plain_write_needs_no_stop_asked(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        trial, job = leased_trial(store, new_experiment(store))
        trial = store.update_trial(trial.id, 5.0, stop_requested=True)
        report = Report(trial.id, job.id, 1, 0.5, {}, 11.0)
        _refused(store, report, StepBounds("hash", 11.0, floor=-1), trial, job)
        # Not a plain write: the caller stops the trial after the writes.
        assert store.record_step(report, StepBounds("hash", 11.0), 20.0) is not None


def test_store_plain_write_needs_the_experiment_running(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial, job = leased_trial(store, experiment_id)
        store.set_experiment_state(experiment_id, ExperimentState.CANCELLED, 5.0)
        _refused(store, Report(trial.id, job.id, 1, 0.5, {}, 11.0),
                 StepBounds("hash", 11.0, floor=-1), trial, job)


def test_store_record_step_with_the_lock_hint(store_factory: StoreFactory) -> None:
    """``judging`` changes no write, and the locked read that follows answers the
    experiment as it is; a statement in between makes it read again."""
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial, job = leased_trial(store, experiment_id)
        expected = store.get_experiment(experiment_id)
    with store_factory() as store:
        step = Report(trial.id, job.id, 1, 0.25, {}, 10.0)
        updated = store.record_step(step, StepBounds("hash", 10.0), 70.0,
                                    judging=Judging(experiment_id, 0, 0), last_value=0.25)
        assert updated is not None and updated.last_value == 0.25
        assert store.get_experiment(experiment_id, lock=True) == expected
        store.record_step(Report(trial.id, job.id, 2, 0.5, {}, 11.0), StepBounds("hash", 11.0),
                          71.0, judging=Judging(experiment_id, 0, 0), last_value=0.5)
        store.add_resource_used(experiment_id, 3)  # a statement between: read afresh
        assert store.get_experiment(experiment_id, lock=True).resource_used == (
            expected.resource_used + 3
        )
        assert store.get_report(trial.id, 1) == step
        # A lease that does not hold: nothing written, nothing locked.
        late = Report(trial.id, job.id, 3, 0.5, {}, 80.0)
        bounds = StepBounds("hash", 80.0)
        refused = store.record_step(late, bounds, 90.0, judging=Judging(experiment_id, 0, 0))
        assert refused is None


def test_store_settle_trial_logs_and_updates_together(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial, _ = leased_trial(store, experiment_id)
        record = DecisionRecord(trial.id, DecisionKind.STOP, {"rule": "asha.stopping"}, 3, 5.0)
        settled = store.settle_trial(
            record, 5.0, state=TrialState.STOPPED, rung=0, resource=1, ended_at=5.0,
            best_loss=math.inf,
        )
        assert (settled.state, settled.rung, settled.resource, settled.ended_at) == (
            TrialState.STOPPED, 0, 1, 5.0,
        )
        assert settled.best_loss == math.inf
    with store_factory() as store:
        assert store.get_trial(trial.id) == settled
        assert decisions_of(store, trial.id) == [
            (DecisionKind.STOP, {"rule": "asha.stopping"}, 3)
        ]
        assert store.count_active(experiment_id) == 0
    with store_factory() as store, pytest.raises(NotFound):
        store.settle_trial(DecisionRecord(999, DecisionKind.STOP, {}, None, 6.0), 6.0, rung=0)


def test_store_start_trial_numbers_leases_and_logs(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        store.create_trial(experiment_id, 1, {}, "first", 1.0)  # number 0, in bracket 1
        trial, job = store.start_trial(
            experiment_id, 0, {"lr": 0.1}, "k", 2.0,
            rung=2, resource=9, lease=Lease("w", "hash", 60.0), reason={"rule": "asha.start"},
        )
        assert (trial.number, trial.bracket, trial.params, trial.state, trial.rung) == (
            1, 0, {"lr": 0.1}, TrialState.RUNNING, -1,
        )
        assert (job.trial_id, job.trial_number, job.rung, job.from_resource) == (
            trial.id, 1, 2, 0,
        )
        assert (job.to_resource, job.state, job.worker_id, job.token_hash) == (
            9, JobState.LEASED, "w", "hash",
        )
        assert (job.lease_expires_at, job.attempt, job.checkpoint) == (60.0, 0, None)
    with store_factory() as store:
        assert store.get_trial(trial.id) == trial
        assert store.get_job(job.id) == job
        assert store.active_job_of_trial(trial.id) == job
        experiment = store.get_experiment(experiment_id)
        assert (experiment.n_trials, experiment.resource_used) == (2, 9)
        assert store.has_params(experiment_id, "k")
        snap = store.snapshot(experiment, can_start=True)
        assert (snap.n_in_bracket(0), snap.n_in_bracket(1), snap.n_active) == (1, 1, 2)
        assert decisions_of(store, trial.id) == [
            (DecisionKind.CONTINUE, {"rule": "asha.start"}, None)
        ]
    with store_factory() as store, pytest.raises(NotFound):
        store.start_trial(
            999, 0, {}, "x", 3.0, rung=0, resource=1, lease=Lease("w", "h", 9.0), reason={}
        )


def test_store_end_job_refunds_only_when_it_ends(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        store.add_resource_used(experiment_id, 9)
        _, job = leased_trial(store, experiment_id)
        assert store.end_job(job.id, JobState.DONE, 3.0, add_resource_used=-6)
        assert not store.end_job(job.id, JobState.DONE, 4.0, add_resource_used=-6)
    with store_factory() as store:
        assert store.get_experiment(experiment_id).resource_used == 3
        assert store.get_job(job.id).state is JobState.DONE


def test_store_rung_size_follows_its_own_inserts(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trials = [store.create_trial(experiment_id, 0, {}, f"k{i}", 1.0) for i in range(3)]
        experiment = store.get_experiment(experiment_id)
        for i, trial in enumerate(trials):
            store.add_rung_result(experiment_id, result(trial, 0, 0.5 - i / 10))
            assert store.snapshot(experiment, can_start=True).rung_size(0, 0) == i + 1
        store.close_rung_result(experiment_id, 0, 0, trials[0].number)
        snap = store.snapshot(experiment, can_start=True)
        assert (snap.rung_size(0, 0), snap.rung_size(0, 1)) == (3, 0)
        assert snap.count_better(0, 0, 0.45, limit=5) == 2


def test_store_settle_trial_with_a_stop_ends_the_job_and_closes_the_result(
    store_factory: StoreFactory,
) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        store.add_resource_used(experiment_id, 9)
        trial, job = leased_trial(store, experiment_id)
        store.add_rung_result(experiment_id, result(trial, 0, 0.5))
    with store_factory() as store:
        record = DecisionRecord(trial.id, DecisionKind.STOP, {"rule": "asha.stopping"}, 1, 5.0)
        stop = RungStop(experiment_id, job.id, -8, trial.bracket, 0, trial.number)
        settled = store.settle_trial(
            record, 5.0, stop=stop, state=TrialState.STOPPED, rung=0, resource=1, ended_at=5.0
        )
        assert (settled.state, settled.rung, settled.ended_at) == (TrialState.STOPPED, 0, 5.0)
        # The locked read that follows (a claim's) sees the refund (PostgreSQL answers it
        # from the settle's own statement).
        assert store.get_experiment(experiment_id, lock=True).resource_used == 1
    with store_factory() as store:
        assert store.get_trial(trial.id) == settled
        assert store.get_job(job.id).state is JobState.DONE
        assert store.get_experiment(experiment_id).resource_used == 1  # 9 - 8 refunded
        assert store.get_rung_result(trial.id, 0).closed
        assert decisions_of(store, trial.id) == [(DecisionKind.STOP, {"rule": "asha.stopping"}, 1)]
        # The job ended already (no second refund) and the result is closed already (no-op).
        again = DecisionRecord(trial.id, DecisionKind.STOP, {"rule": "again"}, 2, 6.0)
        store.settle_trial(again, 6.0, stop=stop, rung=0)
        assert store.get_experiment(experiment_id).resource_used == 1
    with store_factory() as store:  # a promoted result cannot be closed: nothing is kept
        other, other_job = leased_trial(store, experiment_id)
        store.add_rung_result(experiment_id, result(other, 0, 0.1, promoted=True))
    record = DecisionRecord(other.id, DecisionKind.STOP, {}, 1, 7.0)
    stop = RungStop(experiment_id, other_job.id, 0, other.bracket, 0, other.number)
    with pytest.raises(ConflictError), store_factory() as store:  # rolled back, then caught
        store.settle_trial(record, 7.0, stop=stop, state=TrialState.STOPPED)
    with store_factory() as store:
        assert store.get_trial(other.id).state is TrialState.RUNNING
        assert store.get_job(other_job.id).state is JobState.LEASED
        assert decisions_of(store, other.id) == []


def test_store_counts_better_results_like_the_snapshot(store_factory: StoreFactory) -> None:
    """The stopping test's rank: hand-computed for losses 0.1..0.9, an inf and a new 0.35
    (3 better), counted up to the cap it is given."""
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trials = [store.create_trial(experiment_id, 0, {}, f"k{i}", 1.0) for i in range(11)]
        for i, trial in enumerate(trials[:9]):
            store.add_rung_result(experiment_id, result(trial, 0, (i + 1) / 10))
        store.add_rung_result(experiment_id, result(trials[9], 0, math.inf))
        experiment = store.get_experiment(experiment_id)
        store.add_rung_result(experiment_id, result(trials[10], 0, 0.35))
        snap = store.snapshot(experiment, can_start=True)
        assert snap.rung_size(0, 0) == 11  # as the insert counted it
        assert snap.count_better(0, 0, 0.35, limit=5) == 3
        assert snap.count_better(0, 0, 0.35, limit=2) == 2
        assert snap.count_better(0, 0, 0.05, limit=5) == 0
    with store_factory() as store:  # a fresh transaction: nothing cached, same answers
        snap = store.snapshot(store.get_experiment(experiment_id), can_start=True)
        assert snap.rung_size(0, 0) == 11
        assert snap.count_better(0, 0, 0.35, limit=3) == 3
        assert snap.count_better(0, 0, math.inf, limit=20) == 10


def test_store_judged_report_reads_and_writes_as_without_hints(
    store_factory: StoreFactory,
) -> None:
    """A judged report's writes with the ``judging`` hint (the rung's size and the count of
    better results read with them, the rung insert sent with the next statement: PostgreSQL)
    answer and store what the plain calls do: hand-computed for losses 0.1..0.9 and new
    results 0.35 (3 better) then 0.36 (4 better), counted up to 3 and 5."""
    with store_factory() as store:
        experiment_id = new_experiment(store)
        for i in range(9):
            other = store.create_trial(experiment_id, 0, {}, f"k{i}", 1.0)
            store.add_rung_result(experiment_id, result(other, 0, (i + 1) / 10))
        leased = [leased_trial(store, experiment_id, key=f"j{i}") for i in range(2)]
    for i, ((trial, job), up_to) in enumerate(zip(leased, (3, 5), strict=True)):
        loss = 0.35 + i / 100
        with store_factory() as store:
            report = Report(trial.id, job.id, 1, loss, {}, 10.0)
            judging = Judging(experiment_id, 0, 0, loss, up_to)
            assert store.record_step(report, StepBounds("hash", 10.0), 70.0,
                                     judging=judging, last_value=loss) is not None
            experiment = store.get_experiment(experiment_id, lock=True)
            store.add_rung_result(experiment_id, result(trial, 0, loss))
            snap = store.snapshot(experiment, can_start=True)
            assert snap.rung_size(0, 0) == 10 + i
            assert [snap.count_better(0, 0, loss, limit=k) for k in (3, 2, 5)] == [3, 2, 3 + i]
            assert snap.count_better(0, 0, 0.05, limit=3) == 0
            record = DecisionRecord(trial.id, DecisionKind.CONTINUE, {"rule": "t"}, 1, 11.0)
            store.settle_trial(record, 11.0, rung=0)
            if getattr(store, "is_postgres", False):
                assert store.cache.ranks[(experiment_id, 0, 0)] == (loss, up_to, min(3 + i, up_to))
        with store_factory() as store:  # committed: the result, its rung's count, the trial
            assert store.get_rung_result(trial.id, 0) == result(trial, 0, loss)
            snap = store.snapshot(store.get_experiment(experiment_id), can_start=True)
            assert snap.rung_size(0, 0) == 10 + i
            assert store.get_trial(trial.id).rung == 0


def test_store_a_waiting_rung_insert_is_refused_when_it_is_sent(
    store_factory: StoreFactory,
) -> None:
    """A rung insert that waits for the next statement (PostgreSQL) raises ConflictError
    there when the trial has that result already; other stores raise it at once. Nothing
    of the transaction stays either way."""
    with store_factory() as store:
        experiment_id = new_experiment(store)
        trial, job = leased_trial(store, experiment_id)
        store.add_rung_result(experiment_id, result(trial, 0, 0.5))
    judging = Judging(experiment_id, 0, 0, 0.4, 3)

    def judged_again(store: Any) -> None:
        report = Report(trial.id, job.id, 1, 0.4, {}, 10.0)
        store.record_step(report, StepBounds("hash", 10.0), 70.0, judging=judging)
        store.add_rung_result(experiment_id, result(trial, 0, 0.4))
        store.get_trial(trial.id)

    with pytest.raises(ConflictError), store_factory() as store:
        judged_again(store)
    with store_factory() as store:
        assert store.get_rung_result(trial.id, 0) == result(trial, 0, 0.5)
        if hasattr(store, "executor"):  # a SQL transaction: rolled back as a whole
            assert store.get_report(trial.id, 1) is None


def test_store_start_trial_refuses_seen_params(store_factory: StoreFactory) -> None:
    with store_factory() as store:
        experiment_id = new_experiment(store)
        store.create_trial(experiment_id, 0, {"lr": 0.1}, "seen", 1.0)
    lease = Lease("w", "hash", 60.0)
    with pytest.raises(ParamsSeen), store_factory() as store:
        store.start_trial(
            experiment_id, 0, {"lr": 0.1}, "seen", 2.0,
            rung=0, resource=1, lease=lease, reason={"rule": "asha.start"},
        )
    with store_factory() as store:  # nothing was written: no number, no job, no resource
        experiment = store.get_experiment(experiment_id)
        assert (experiment.n_trials, experiment.resource_used) == (1, 0)
        assert store.next_queued_job(experiment_id) is None
        assert store.count_active(experiment_id) == 1  # the first trial only
