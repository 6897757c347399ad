"""The job protocol's rules on the in-memory store (the SQL store runs the same rules)."""

import math

import pytest

import tuner.coordinator as co
from tests.factories import Driver, make_document
from tuner.domain import DecisionKind, ExperimentState, JobState, TrialState
from tuner.errors import (
    ConfigError,
    DuplicateReport,
    InvalidTransition,
    LeaseExpired,
    OutOfRange,
    ParamsSeen,
)
from tuner.storage.memory import MemoryStore


def objective(params, resource):
    return params["x"] + 1.0 / resource


@pytest.fixture
def driver():
    return Driver(make_document({"type": "asha", "max_resource": 9}, lease_ttl_s=10), objective)


def test_report_is_idempotent_and_refuses_another_value(driver):
    a = driver.claim()
    first = co.report(driver.store, a.job.id, a.lease_token, 1, 0.5, driver.tick())
    again = co.report(driver.store, a.job.id, a.lease_token, 1, 0.5, driver.tick())
    assert first.kind is again.kind is DecisionKind.CONTINUE
    with pytest.raises(DuplicateReport, match="already has value 0.5 at step 1"):
        co.report(driver.store, a.job.id, a.lease_token, 1, 0.7, driver.tick())
    nan_twice = [co.report(driver.store, a.job.id, a.lease_token, 1, 0.5, driver.tick())]
    assert nan_twice[0].kind is DecisionKind.CONTINUE


def test_report_outside_the_job_range_is_refused(driver):
    a = driver.claim()
    for step in (0, 2):  # the first job trains 0 -> 1
        with pytest.raises(OutOfRange, match="report steps 1..1"):
            co.report(driver.store, a.job.id, a.lease_token, step, 0.5, driver.tick())


def test_a_stale_lease_token_writes_nothing(driver):
    a = driver.claim()
    with pytest.raises(LeaseExpired, match="does not match"):
        co.report(driver.store, a.job.id, "not-the-token", 1, 0.5, driver.tick())
    assert driver.store.get_report(a.trial.id, 1) is None


def test_an_expired_lease_is_reaped_and_resumed_from_the_checkpoint_by_another_worker():
    doc = make_document({"type": "asha", "max_resource": 9, "min_resource": 3}, lease_ttl_s=10)
    driver = Driver(doc, objective)
    store = driver.store
    a = driver.claim()  # trains 0 -> 3
    co.report(store, a.job.id, a.lease_token, 2, 0.9, driver.tick(), checkpoint="ckpt-2")
    driver.now += 60
    reaped = co.reap(store, driver.tick())
    assert [job.id for job in reaped] == [a.job.id]
    assert store.get_trial(a.trial.id).state is TrialState.LOST
    with pytest.raises(LeaseExpired):
        co.report(store, a.job.id, a.lease_token, 3, 0.8, driver.tick())  # the zombie stops
    b = driver.claim()
    assert b.trial.id == a.trial.id
    assert (b.job.from_resource, b.job.to_resource, b.job.checkpoint) == (2, 3, "ckpt-2")
    decision = co.complete(store, b.job.id, b.lease_token, driver.tick(), 0.8)
    assert decision.kind is DecisionKind.PAUSE
    assert store.get_job(a.job.id).state is JobState.EXPIRED


def test_failures_retry_then_fail_and_rank_worst():
    doc = make_document({"type": "asha", "max_resource": 9}, max_retries=1)
    driver = Driver(doc, objective)
    a = driver.claim()
    co.fail(driver.store, a.job.id, a.lease_token, "CUDA out of memory", driver.tick())
    b = driver.claim()
    assert b.trial.id == a.trial.id and b.job.attempt == 1
    trial = co.fail(driver.store, b.job.id, b.lease_token, "CUDA out of memory", driver.tick())
    assert trial.state is TrialState.FAILED
    (result,) = driver.store.rung_results(driver.experiment.id)
    assert result.loss == math.inf and result.closed


def test_a_paused_trial_stopped_by_hand_is_never_promoted():
    driver = Driver(make_document({"type": "asha", "max_resource": 9}), objective)
    values = iter([0.1, 0.5, 0.6])
    finished = []
    for _ in range(3):
        a = driver.claim()
        co.complete(driver.store, a.job.id, a.lease_token, driver.tick(), next(values))
        finished.append(a.trial)
    co.stop_trial(driver.store, finished[0].id, driver.tick())  # the best one
    nxt = driver.claim()
    assert nxt.job.from_resource == 0  # no promotion: the top 1 of 3 is closed
    with pytest.raises(InvalidTransition):
        co.stop_trial(driver.store, finished[0].id, driver.tick())


def test_a_running_trial_stopped_by_hand_gets_stop_at_its_next_report():
    driver = Driver(make_document({"type": "asha", "max_resource": 9}), objective)
    a = driver.claim()
    co.stop_trial(driver.store, a.trial.id, driver.tick())
    decision = co.heartbeat(driver.store, a.job.id, a.lease_token, driver.tick())
    assert decision.kind is DecisionKind.STOP
    assert driver.store.get_trial(a.trial.id).state is TrialState.STOPPED


def test_pause_resume_and_cancel(driver):
    a = driver.claim()
    co.change_state(driver.store, driver.experiment.id, "pause", driver.tick())
    assert isinstance(driver.claim(), co.NothingNow)
    # a running job goes on while paused and its result counts
    assert co.complete(driver.store, a.job.id, a.lease_token, driver.tick(), 0.3).kind == "pause"
    co.change_state(driver.store, driver.experiment.id, "resume", driver.tick())
    b = driver.claim()
    co.change_state(driver.store, driver.experiment.id, "cancel", driver.tick())
    assert isinstance(driver.claim(), co.ExperimentOver)
    decision = co.report(driver.store, b.job.id, b.lease_token, 1, 0.4, driver.tick())
    assert decision.kind is DecisionKind.STOP
    states = {t.state for t in driver.store.trials(driver.experiment.id)}
    assert states == {TrialState.CANCELLED}
    with pytest.raises(InvalidTransition, match="it is cancelled"):
        co.change_state(driver.store, driver.experiment.id, "resume", driver.tick())


def test_max_concurrent_and_time_limit():
    doc = make_document(
        {"type": "asha", "max_resource": 9}, budget={"max_concurrent": 2, "time_limit_s": 100}
    )
    driver = Driver(doc, objective)
    a, b = driver.claim(), driver.claim()
    assert isinstance(driver.claim(), co.NothingNow)
    co.complete(driver.store, a.job.id, a.lease_token, driver.tick(), 0.5)
    c = driver.claim()
    assert isinstance(c, co.Assignment)
    co.complete(driver.store, b.job.id, b.lease_token, driver.tick(), 0.4)
    driver.now += 200  # past the time limit: no new job of any kind
    got = driver.claim()
    assert isinstance(got, co.NothingNow) and got.reason.rule == "budget"
    assert driver.store.get_experiment(driver.experiment.id).state is ExperimentState.RUNNING
    co.complete(driver.store, c.job.id, c.lease_token, driver.tick(), 0.3)
    assert isinstance(driver.claim(), co.ExperimentOver)  # nothing active: it ends
    assert driver.store.get_experiment(driver.experiment.id).state is ExperimentState.COMPLETED


def test_invalid_documents_name_the_field():
    with pytest.raises(
        ConfigError, match=r"scheduler.eta: Input should be greater than or equal to 2"
    ):
        co.create_experiment(
            MemoryStore(), make_document({"type": "asha", "max_resource": 9, "eta": 1}), 0.0
        )


def test_release_requeues_without_spending_a_retry(driver):
    a = driver.claim()
    trial = co.release(driver.store, a.job.id, a.lease_token, driver.tick())
    assert trial.state is TrialState.PENDING
    assert trial.retries == 0
    b = driver.claim()
    assert b.trial.id == a.trial.id
    assert driver.store.get_job(a.job.id).state is JobState.RELEASED


def test_complete_refuses_a_value_that_contradicts_the_stored_report(driver):
    a = driver.claim()
    co.report(driver.store, a.job.id, a.lease_token, 1, 0.5, driver.tick())
    with pytest.raises(DuplicateReport, match="already reported 0.5 at step 1"):
        co.complete(driver.store, a.job.id, a.lease_token, driver.tick(), 0.9)
    assert co.complete(driver.store, a.job.id, a.lease_token, driver.tick(), 0.5).kind == "pause"


def test_a_claim_samples_again_when_its_trusting_first_draw_was_seen():
    """The first draw of a claim is not checked against the store; the store refuses a seen
    configuration (ParamsSeen, nothing written) and the claim samples again, asking. A
    three-point space is covered exactly once, then the experiment has nothing to start."""

    class Counting(MemoryStore):
        refused = 0

        def start_trial(self, *args, **kwargs):
            try:
                return super().start_trial(*args, **kwargs)
            except ParamsSeen:
                Counting.refused += 1
                raise

    store = Counting()
    space = {"c": {"type": "categorical", "choices": ["a", "b", "c"]}}
    doc = make_document({"type": "asha", "max_resource": 9}, space=space, seed=3)
    experiment = co.create_experiment(store, doc, 0.0)
    seen = []
    for i in range(3):
        claimed = co.claim(store, experiment.id, "w", float(i))
        assert isinstance(claimed, co.Assignment)
        seen.append(claimed.trial.params["c"])
    assert sorted(seen) == ["a", "b", "c"]
    assert Counting.refused >= 1  # with seed 3, a trusting draw repeated an earlier point
    assert not isinstance(co.claim(store, experiment.id, "w", 9.0), co.Assignment)
    assert store.get_experiment(experiment.id).n_trials == 3


@pytest.mark.parametrize("form", ["stopping", "promotion"])
def test_a_report_of_a_known_job_answers_as_a_report_that_reads_it_first(form):
    """``report(..., known=...)`` writes first and reads the job only when the writes'
    guards refuse: the same answers, errors and rows as the report that reads it first,
    with stale tokens, repeats, conflicting values and steps past a rung in between."""
    import random

    from tuner.coordinator.outcomes import Context
    from tuner.coordinator.report import KnownJob

    scheduler = {"type": "asha", "eta": 3, "min_resource": 1, "max_resource": 9, "form": form}

    def run(use_known: bool) -> tuple[list, list, list]:
        store = MemoryStore()
        doc = make_document(scheduler, budget={"max_trials": 15}, lease_ttl_s=10_000)
        experiment = co.create_experiment(store, doc, 0.0)
        ctx = Context.load(store, experiment.id, lock=False)
        rnd, log, now = random.Random(5), [], 0.0
        while isinstance(a := co.claim(store, experiment.id, "w", now := now + 1), co.Assignment):
            known = KnownJob(a.job, ctx) if use_known else None
            steps = list(range(a.job.from_resource + 1, a.job.to_resource + 1))
            if rnd.random() < 0.3 and len(steps) > 2:
                steps = sorted({*steps[::2], steps[-1]})  # some pass a rung unreported
            for step in steps:
                value = rnd.random()
                now += 1
                decision = co.report(store, a.job.id, a.lease_token, step, value, now, known=known)
                log.append((a.trial.number, step, decision.kind, decision.reason.as_dict()))
                with pytest.raises(LeaseExpired):
                    co.report(store, a.job.id, "stale", step, value, now, known=known)
                again = co.report(store, a.job.id, a.lease_token, step, value, now, known=known)
                log.append(("again", again.kind, again.reason.as_dict()))
                with pytest.raises(DuplicateReport):
                    co.report(store, a.job.id, a.lease_token, step, value + 1, now, known=known)
                if decision.kind is DecisionKind.STOP:
                    break
            else:
                done = co.complete(store, a.job.id, a.lease_token, now := now + 1)
                log.append(("complete", done.kind, done.reason.as_dict()))
        trials = [(t.number, t.state, t.rung, t.best_loss) for t in store.trials(experiment.id)]
        results = sorted(
            (r.bracket, r.rung, r.trial_number, r.loss, r.promoted, r.closed)
            for r in store.rung_results(experiment.id)
        )
        return log, trials, results

    plain, known = run(False), run(True)
    kinds = {entry[2] for entry in plain[0] if len(entry) == 4}
    judged = {DecisionKind.STOP} if form == "stopping" else set()  # promotion: at completion
    assert len(plain[0]) > 50 and kinds >= {DecisionKind.CONTINUE, *judged}
    assert known == plain
