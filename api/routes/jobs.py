"""The job protocol: claim, report, heartbeat, complete, fail (and the trial's output).

Every route here is ``async`` and runs its transaction with
:meth:`api.writer.Writer.write_async`: on PostgreSQL on the event loop itself, with no worker
thread (a plain ``def`` route with a response model costs FastAPI two thread hand-offs per
request, the route and then the validation of its answer, and each hand-off fights for the
GIL with the thread that holds the experiment's lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from api import claims
from api.auth import Worker
from api.deps import Id, RuntimeDep
from api.errors import error_response
from api.shapes import decision_out, job_out
from api.validation import InvalidRequest
from tuner import coordinator
from tuner.coordinator import Assignment, ClaimResult, ExperimentOver
from tuner.coordinator.lease import CONTINUE
from tuner.domain import Decision, DecisionKind
from tuner.storage import queries
from tuner.storage.sql import SqlStore
from tuner.wire import (
    OUTPUT_TAIL_CHARS,
    ClaimIn,
    CompleteIn,
    DecisionOut,
    ErrorOut,
    FailIn,
    FailOut,
    HeartbeatIn,
    JobOut,
    NextIn,
    OutputIn,
    OutputOut,
    ReportIn,
)

router = APIRouter(
    tags=["jobs"], dependencies=[Worker],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
               422: {"model": ErrorOut}},
)
_CLAIM: dict[int | str, dict[str, Any]] = {
    200: {"model": JobOut}, 204: {"description": "nothing to hand out now; ask again"},
    410: {"model": ErrorOut, "description": "the experiment is over"},
}
_LEASED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "stale lease token, or another value at this step"},
}
ClaimBody = Annotated[ClaimIn | None, Body()]


def _claim_answer(result: coordinator.ClaimResult) -> JobOut | Response:
    if isinstance(result, Assignment):
        return job_out(result)
    if isinstance(result, ExperimentOver):
        return error_response(
            410, "experiment_over", f"the experiment is {result.state}: no more jobs"
        )
    return Response(status_code=204)


@router.post("/experiments/{experiment_id}/claims", response_model=JobOut, responses=_CLAIM)
async def claim(
    experiment_id: Id, runtime: RuntimeDep, body: ClaimBody = None
) -> JobOut | Response:
    """Lease the next job of this experiment, waiting up to ``wait_s`` for one."""
    body = body or ClaimIn()
    return _claim_answer(
        await claims.claim(runtime, experiment_id, body.worker_id, body.wait_s)
    )


@router.post("/claims", response_model=JobOut, responses=_CLAIM)
async def claim_any(runtime: RuntimeDep, body: ClaimBody = None) -> JobOut | Response:
    """Lease the next job of any running experiment (fair across them); 204 when none."""
    body = body or ClaimIn()
    return _claim_answer(await claims.claim(runtime, None, body.worker_id, body.wait_s))


#: Answers that end the job: a call that asked for the next job gets one with them.
_ENDS_JOB = frozenset({DecisionKind.STOP, DecisionKind.PAUSE, DecisionKind.COMPLETE})


async def _decide(
    runtime: RuntimeDep,
    operation: str,
    job_id: int,
    fn: Callable[[SqlStore, float], Decision],
    next_in: NextIn | None = None,
) -> Response:
    """Run a leased-job operation; count the scheduler's decisions (not heartbeats' answers)
    and wake waiting claims when the job ended. With ``next_in``, an answer that ends the
    job comes with the next job, claimed in the same transaction (the experiment's lock,
    which a judgement took already, is held until the commit either way)."""
    known = runtime.writer.known_jobs.get(job_id)  # as this process knows it

    def run(store: SqlStore) -> tuple[Decision, int | None, ClaimResult | None]:
        store.claim_follows = next_in is not None
        decision = fn(store, runtime.now())
        # Completions always wake claims. The coordinator read the job and its experiment
        # already, or this process knew them: no statement.
        if operation == "complete" or decision.kind is not DecisionKind.CONTINUE:
            job = known.job if known is not None else store.known_job(job_id)
            experiment_id = job.experiment_id
            following = None
            if next_in is not None and decision.kind in _ENDS_JOB:
                following = claims.claim_now(runtime, store, experiment_id, next_in.worker_id)
            return decision, experiment_id, following
        if known is None:  # for its next reports (the fast path)
            job = store.known_job(job_id)
            runtime.writer.known_jobs.remember(job, store.known_experiment(job.experiment_id))
        return decision, None, None

    # Reports and completions take the experiment's lock: its queue (Writer.write_async).
    queue = known.job.experiment_id if known is not None and operation != "heartbeat" else None
    decision, experiment_id, following = await runtime.writer.write_async(operation, run, queue)
    if decision.kind in _ENDS_JOB:
        runtime.writer.known_jobs.forget(job_id)
    if operation != "heartbeat" or decision.kind is DecisionKind.STOP:
        runtime.metrics.count_decision(decision.kind.value)
    if experiment_id is not None:
        runtime.wakeups.notify(experiment_id)
        if following is not None:
            claims.counted(runtime, experiment_id, following)
    next_job = job_out(following) if isinstance(following, Assignment) else None
    # Serialised here: FastAPI would validate the model it was given again, then dump it.
    return Response(decision_out(decision, next_job).model_dump_json(), media_type=_JSON)


_JSON = "application/json"
#: The answer to every plain report, serialised once (a DecisionOut, as the route declares).
_CONTINUED = decision_out(CONTINUE, None).model_dump_json().encode()


@router.post("/jobs/{job_id}/reports", response_model=DecisionOut, responses=_LEASED)
async def report(job_id: Id, body: ReportIn, runtime: RuntimeDep) -> Response:
    """Store the value at ``step`` (once per trial and step) and answer the decision.

    A non-finite value is sent as ``value_kind`` (``nan``, ``inf``, ``-inf``) and stops the
    trial. The same value again is answered again (200); another value is 409. A report
    that names another ``metric`` than the experiment's is 422 ``metric_mismatch``."""
    value = body.as_float()
    if value is None:  # pragma: no cover - ReportIn requires a value or a value_kind
        raise InvalidRequest("body.value: a report needs a value")
    if await runtime.writer.write_plain_report(job_id, body, value, runtime.now()):
        runtime.metrics.count_decision(DecisionKind.CONTINUE.value)
        runtime.metrics.reports.inc()
        return Response(_CONTINUED, media_type=_JSON)
    known = runtime.writer.known_jobs.get(job_id)  # then the job need not be read first
    out = await _decide(runtime, "report", job_id, lambda store, now: coordinator.report(
        store, job_id, body.lease_token, body.step, value, now,
        metrics=body.metrics, checkpoint=body.checkpoint, known=known, metric=body.metric,
    ), body.next)
    runtime.metrics.reports.inc()
    return out


@router.post("/jobs/{job_id}/heartbeat", response_model=DecisionOut, responses=_LEASED)
async def heartbeat(job_id: Id, body: HeartbeatIn, runtime: RuntimeDep) -> Response:
    """Renew the lease; ``stop`` when the trial was stopped by hand or cancelled."""

    def beat(store: SqlStore, now: float) -> Decision:
        decision = coordinator.heartbeat(store, job_id, body.lease_token, now)
        worker_id = store.known_job(job_id).worker_id  # set once, when the job was leased
        if worker_id:
            queries.touch_worker(store.session, worker_id, now)
        return decision

    return await _decide(runtime, "heartbeat", job_id, beat)


@router.post("/jobs/{job_id}/complete", response_model=DecisionOut, responses=_LEASED)
async def complete(job_id: Id, body: CompleteIn, runtime: RuntimeDep) -> Response:
    """The job reached ``to_resource``: ``pause`` (await promotion), ``complete`` or ``stop``."""
    return await _decide(runtime, "complete", job_id, lambda store, now: coordinator.complete(
        store, job_id, body.lease_token, now, value=body.as_float(),
        checkpoint=body.checkpoint, metrics=body.metrics, metric=body.metric,
    ), body.next)


@router.post("/jobs/{job_id}/fail", response_model=FailOut, responses=_LEASED)
async def fail(job_id: Id, body: FailIn, runtime: RuntimeDep) -> FailOut:
    """The worker gave up: the job is queued again (from the last checkpoint) or the trial
    fails once ``max_retries`` is spent."""
    trial = await runtime.writer.write_async("fail", lambda store: coordinator.fail(
        store, job_id, body.lease_token, body.error, runtime.now()
    ))
    runtime.writer.known_jobs.forget(job_id)
    runtime.wakeups.notify(trial.experiment_id)
    return FailOut(trial_id=trial.id, trial_state=trial.state.value, retries=trial.retries)


@router.post("/jobs/{job_id}/release", response_model=FailOut, responses=_LEASED)
async def release(job_id: Id, body: HeartbeatIn, runtime: RuntimeDep) -> FailOut:
    """A worker shutting down hands its job back: queued again from the last checkpoint,
    without spending one of the trial's retries."""
    trial = await runtime.writer.write_async("release", lambda store: coordinator.release(
        store, job_id, body.lease_token, runtime.now()
    ))
    runtime.writer.known_jobs.forget(job_id)
    runtime.wakeups.notify(trial.experiment_id)
    return FailOut(trial_id=trial.id, trial_state=trial.state.value, retries=trial.retries)


@router.post("/jobs/{job_id}/output", response_model=OutputOut, responses=_LEASED)
async def output(job_id: Id, body: OutputIn, runtime: RuntimeDep) -> OutputOut:
    """Append to the trial's output; the last 16 Ki characters are kept for the dashboard.

    Taken while the lease is live, and after a decision ended the job (a stop, a pause, the
    end) until the trial runs another job; refused (409) after a release, a failure or an
    expiry."""

    def run(store: SqlStore) -> OutputOut:
        job = coordinator.held_job(store, job_id, body.lease_token, runtime.now())
        tail = (queries.get_output_tail(store.session, job.trial_id) or "") + body.text
        tail = tail[-OUTPUT_TAIL_CHARS:]
        queries.set_output_tail(store.session, job.trial_id, tail)
        return OutputOut(trial_id=job.trial_id, n_chars=len(tail))

    return await runtime.writer.write_async("output", run)

