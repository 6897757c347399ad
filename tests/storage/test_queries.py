"""The read side (tuner.storage.queries) on every database."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.storage.test_store_contract import make_config, result
from tuner.domain import ExperimentState, JobState, Report, TrialState
from tuner.errors import ConflictError, NotFound
from tuner.storage import queries as q
from tuner.storage.sql import open_store


@pytest.fixture
def seeded(session_factory: sessionmaker[Session]) -> dict[str, Any]:
    """Two experiments; the first has 5 trials with reports, rung results, a job each."""
    with session_factory.begin() as session:
        store = open_store(session)
        first = store.create_experiment(make_config(name="first"), 10.0).id
        second = store.create_experiment(make_config(name="second"), 11.0).id
        trials = []
        for i, loss in enumerate([0.5, 0.2, math.inf, 0.9, None]):
            t = store.create_trial(first, i % 2, {"i": i}, f"k{i}", 20.0 + i)
            job = store.create_job(t, 0, 0, 9, None, 0, 21.0)
            for step in range(1, 10):
                value = math.nan if (i == 2 and step == 5) else loss or 1.0 / step
                store.add_report(Report(t.id, job.id, step, value, {"step": step}, 30.0 + step))
            if loss is not None:
                store.add_rung_result(first, result(t, 0, loss))
                store.update_trial(t.id, 40.0 + i, best_loss=loss, state=TrialState.PAUSED)
            trials.append(t)
        store.end_job(job.id, JobState.DONE, 50.0)
        store.mark_promoted(first, 1, 0, 1)
        store.close_rung_result(first, 0, 0, 2)
    return {"first": first, "second": second, "trials": trials}


def test_queries_list_experiments_progress(session_factory: Any, seeded: dict[str, Any]) -> None:
    with session_factory() as session:
        page = q.list_experiments(session, limit=10)
        assert page.total == 2 and [e.name for e in page.items] == ["second", "first"]
        first = page.items[1]
        assert first.trials_by_state == {"paused": 4, "pending": 1}
        best = first.best
        assert best is not None and (best.number, best.ranked_step, best.ranked_loss) == (1, 1, 0.2)
        assert (best.checkpoint, best.checkpoint_step) == (None, None)
        assert page.items[0].best is None and page.items[0].trials_by_state == {}
        assert q.list_experiments(session, limit=1, offset=1).items[0].name == "first"
        running = q.list_experiments(session, state=ExperimentState.PAUSED)
        assert running.total == 0 and running.items == []
        detail = q.get_experiment_detail(session, seeded["first"])
        assert detail.config["name"] == "first" and detail.summary.n_trials == 5
        with pytest.raises(NotFound):
            q.get_experiment_detail(session, 999)


def test_queries_list_trials_orders(session_factory: Any, seeded: dict[str, Any]) -> None:
    first = seeded["first"]
    with session_factory() as session:
        by_number = q.list_trials(session, first)
        assert by_number.total == 5 and [t.number for t in by_number.items] == [0, 1, 2, 3, 4]
        best = q.list_trials(session, first, order_by="best")
        assert [t.number for t in best.items] == [1, 0, 3, 2, 4]  # inf and None last
        updated = q.list_trials(session, first, order_by="updated", limit=2)
        assert updated.total == 5 and [t.number for t in updated.items] == [3, 2]
        paused = q.list_trials(session, first, state=TrialState.PAUSED, limit=2, offset=1)
        assert paused.total == 4 and [t.number for t in paused.items] == [1, 2]


def test_queries_trial_detail(session_factory: Any, seeded: dict[str, Any]) -> None:
    trial = seeded["trials"][2]
    with session_factory() as session:
        detail = q.trial_detail(session, trial.id)
        assert detail.trial.best_loss == math.inf
        assert [p.step for p in detail.reports] == list(range(1, 10))
        assert math.isnan(detail.reports[4].value) and detail.reports[4].value_kind == "nan"
        assert detail.reports[0].value == math.inf and detail.reports[0].metrics == {"step": 1}
        assert [(r.rung, r.closed) for r in detail.rung_results] == [(0, True)]
        assert [j.state for j in detail.jobs] == [JobState.QUEUED]
        assert detail.decisions == [] and detail.output_tail is None
        assert len(q.trial_detail(session, trial.id, max_reports=3).reports) == 3
        with pytest.raises(NotFound):
            q.trial_detail(session, 999)


def test_queries_learning_curves_downsample(session_factory: Any, seeded: dict[str, Any]) -> None:
    with session_factory() as session:
        curves = q.learning_curves(session, seeded["first"], max_points=4, max_trials=3)
        assert [c.number for c in curves] == [1, 0, 3]
        for curve in curves:
            assert curve.n_reports == 9
            assert [step for step, _ in curve.points] == [1, 4, 7, 9]  # every 3rd, and the last
        assert q.learning_curves(session, seeded["first"], max_points=100, max_trials=1)[0].points[
            -1
        ] == (9, 0.2)
        ids = [seeded["trials"][4].id]
        (curve,) = q.learning_curves(session, seeded["first"], trial_ids=ids, max_points=1)
        assert curve.points == [(1, 1.0), (9, 1.0 / 9)]


def test_queries_rung_table_and_nth_loss(session_factory: Any, seeded: dict[str, Any]) -> None:
    first = seeded["first"]
    with session_factory() as session:
        table = q.rung_table(session, first)
        rows = [(r.bracket, r.rung, r.n_results, r.n_promoted, r.n_closed, r.n_open) for r in table]
        assert rows == [(0, 0, 2, 0, 1, 1), (1, 0, 2, 1, 0, 1)]
        assert q.nth_loss(session, first, 0, 0, 0) == 0.5
        assert q.nth_loss(session, first, 0, 0, 1) == math.inf
        assert q.nth_loss(session, first, 0, 0, 2) is None
        assert q.nth_loss(session, first, 1, 0, 1) == 0.9
        assert q.nth_loss(session, first, 1, 0, -1) is None


def test_queries_workers(session_factory: Any, seeded: dict[str, Any]) -> None:
    job_trial = seeded["trials"][0]
    with session_factory.begin() as session:
        w = q.upsert_worker(session, "w1", "gpu-box", 100.0, gpus=[{"index": 0}], cpus=8, slots=2)
        assert w.created_at == 100.0 and w.slots == 2
        q.upsert_worker(session, "w2", "cpu-box", 101.0)
        store = open_store(session)
        job = store.active_job_of_trial(job_trial.id)
        assert job is not None
        store.lease_job(job.id, "w1", "h", 500.0)
    with session_factory.begin() as session:
        again = q.upsert_worker(session, "w1", "gpu-box-2", 200.0, labels={"zone": "a"})
        assert (again.created_at, again.last_seen_at, again.host) == (100.0, 200.0, "gpu-box-2")
        assert q.touch_worker(session, "w2", 300.0) and not q.touch_worker(session, "nope", 1.0)
        q.add_lost_lease(session, "w2")
    with session_factory() as session:
        page = q.list_workers(session)
        assert page.total == 2 and [w.id for w in page.items] == ["w2", "w1"]
        assert page.items[0].lost_leases == 1 and page.items[1].labels == {"zone": "a"}
        assert page.items[1].leased_jobs == [job.id] and page.items[0].leased_jobs == []


def test_queries_tokens(session_factory: Any) -> None:
    with session_factory.begin() as session:
        admin = q.create_token(session, "admin", "admin", "h1", 1.0)
        worker = q.create_token(session, "worker", "worker", "h2", 2.0)
        with pytest.raises(ConflictError):
            q.create_token(session, "dup", "viewer", "h1", 3.0)
        assert q.revoke_token(session, worker.id, 4.0)
        assert not q.revoke_token(session, worker.id, 5.0)
    with session_factory() as session:
        assert q.token_by_hash(session, "h1") == admin and admin.active
        revoked = q.token_by_hash(session, "h2")
        assert revoked is not None and not revoked.active and revoked.revoked_at == 4.0
        assert q.token_by_hash(session, "h3") is None
        assert [t.name for t in q.list_tokens(session)] == ["admin"]
        assert [t.name for t in q.list_tokens(session, include_revoked=True)] == ["admin", "worker"]


def test_queries_output_tail(session_factory: Any, seeded: dict[str, Any]) -> None:
    trial = seeded["trials"][0]
    with session_factory.begin() as session:
        q.set_output_tail(session, trial.id, "x" * 10 + "y" * q.MAX_OUTPUT_TAIL)
        with pytest.raises(NotFound):
            q.set_output_tail(session, 999, "z")
    with session_factory() as session:
        assert q.get_output_tail(session, trial.id) == "y" * q.MAX_OUTPUT_TAIL
        assert q.trial_detail(session, trial.id).output_tail == "y" * q.MAX_OUTPUT_TAIL
        with pytest.raises(NotFound):
            q.get_output_tail(session, 999)
