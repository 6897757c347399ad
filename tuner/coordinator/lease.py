"""What every operation on a leased job starts from: the job read with its token checked,
its lease checked, a stop or cancel that was asked for, and the answer to a repeated call.

A report, heartbeat or completion carries the job's lease token. A stale token (the lease
expired and the job went to another worker) is refused with :class:`LeaseExpired` and writes
nothing, so a zombie worker stops and the winner's data is never overwritten. The rules
themselves (whose token holds a job, whose lease is live, when a stop was asked) live in
:mod:`tuner.protocol`.
"""

from __future__ import annotations

from tuner.coordinator.outcomes import Context, close_trial
from tuner.domain import (
    Decision,
    DecisionKind,
    Experiment,
    ExperimentState,
    Job,
    JobState,
    Reason,
    Trial,
    TrialState,
)
from tuner.errors import LeaseExpired
from tuner.protocol import (
    hash_token,
    holds_token,
    keeps_output,
    lease_is_live,
    stop_asked,
    trial_went_on,
)
from tuner.schedulers.base import Snapshot
from tuner.store import JobContext, Store

CONTINUE = Decision(DecisionKind.CONTINUE, Reason("continue"))


def job_for(store: Store, job_id: int, lease_token: str, step: int | None = None) -> JobContext:
    """The job (with its trial, experiment and report at ``step``) if the token holds it."""
    found = store.load_job(job_id, step=step)
    if not holds_token(found.job, hash_token(lease_token)):
        raise LeaseExpired(
            f"the lease token does not match job {job_id}: this worker does not hold it "
            "(its lease expired and the job went to another worker); stop training it"
        )
    return found


def require_live_lease(job: Job, now: float) -> None:
    if not lease_is_live(job, now):
        raise ended_lease(job)


#: Why a job's lease is no longer live, by the job's state (a leased job: its time ran out).
_ENDED = {
    JobState.DONE: "is done",
    JobState.FAILED: "failed",
    JobState.RELEASED: "was released; its trial is queued for another worker",
    JobState.EXPIRED: "lost its lease; its trial is queued for another worker",
    JobState.LEASED: "lost its lease (its time ran out); another worker will take its trial",
    JobState.CANCELLED: "was cancelled with its experiment",
}


def ended_lease(job: Job) -> LeaseExpired:
    """The refusal of a call on a job whose lease has ended, saying how it ended."""
    how = _ENDED.get(job.state, f"has ended ({job.state})")
    return LeaseExpired(f"job {job.id} {how}: stop training it")


def held_job(store: Store, job_id: int, lease_token: str, now: float) -> Job:
    """The job whose output ``lease_token`` sends, if its output is still kept
    (:func:`tuner.protocol.keeps_output`: a live lease, or a job a decision ended, until
    its trial runs again); LeaseExpired if not."""
    found = job_for(store, job_id, lease_token)
    if not keeps_output(found.job, found.trial, now):
        raise LeaseExpired(
            f"the lease of job {job_id} has ended ({found.job.state}) and its trial went on "
            "without it: its output is not kept"
        )
    return found.job


def settled_decision(trial: Trial, job: Job | None = None) -> Decision:
    """The answer for a repeated call once the trial moved on. For a ``job`` that a decision
    ended while its trial went on (ran again, or got a result at a higher rung), that
    decision was a pause at the job's rung: only a pause lets a trial be promoted."""
    if job is not None and job.state is JobState.DONE and trial_went_on(job, trial):
        reason = Reason("await_promotion", bracket=job.bracket, rung=job.rung)
        return Decision(DecisionKind.PAUSE, reason)
    if trial.state in (TrialState.STOPPED, TrialState.FAILED, TrialState.CANCELLED):
        return Decision(DecisionKind.STOP, Reason("already_stopped", note=str(trial.state)))
    if trial.state is TrialState.COMPLETED:
        return Decision(DecisionKind.COMPLETE, Reason("max_resource"))
    if trial.state is TrialState.PAUSED:
        return Decision(DecisionKind.PAUSE, Reason("await_promotion", rung=trial.rung))
    return CONTINUE


def stop_if_asked(
    store: Store, job: Job, trial: Trial, experiment: Experiment, now: float
) -> Decision | None:
    """Cancel and stop-by-hand take effect at the next report or heartbeat."""
    if not stop_asked(trial, experiment):
        return None
    ctx = Context.load(store, job.experiment_id, lock=True)
    trial = store.get_trial(trial.id)
    if experiment.state is ExperimentState.CANCELLED:
        reason = Reason("cancelled", note="the experiment was cancelled")
        close_trial(store, ctx, trial, job, TrialState.CANCELLED, reason, now)
    else:
        reason = Reason("manual_stop", rung=ctx.target_rung(trial, job), note="stopped by hand")
        close_trial(store, ctx, trial, job, TrialState.STOPPED, reason, now)
    return Decision(DecisionKind.STOP, reason)


def snapshot_for(store: Store, ctx: Context) -> Snapshot:
    """The snapshot a judgement reads (``n_active`` is counted only if the rule asks)."""
    return store.snapshot(ctx.experiment, can_start=True)
