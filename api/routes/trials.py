"""One trial: its history, and stopping it by hand."""

from __future__ import annotations

from fastapi import APIRouter

from api import views
from api.auth import Admin, Viewer
from api.deps import Id, RuntimeDep
from api.shapes import sign_of, trial_out
from tuner import coordinator
from tuner.storage.sql import SqlStore
from tuner.wire import ErrorOut, TrialDetailOut, TrialOut

router = APIRouter(
    tags=["trials"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
               422: {"model": ErrorOut}},
)


@router.get("/trials/{trial_id}", response_model=TrialDetailOut, dependencies=[Viewer])
def get_trial(trial_id: Id, runtime: RuntimeDep) -> TrialDetailOut:
    """A trial with its reports, values at each rung, decisions (with reasons) and jobs."""
    return runtime.read("get_trial", lambda s: views.trial(s, trial_id))


@router.post(
    "/trials/{trial_id}/stop", response_model=TrialOut, dependencies=[Admin],
    responses={409: {"model": ErrorOut}},
)
def stop_trial(trial_id: Id, runtime: RuntimeDep) -> TrialOut:
    """Stop a trial: a running one gets ``stop`` at its next report or heartbeat; a paused or
    queued one stops now. It is ranked worst at the rung it worked toward."""

    def run(store: SqlStore) -> TrialOut:
        trial = coordinator.stop_trial(store, trial_id, runtime.now())
        return trial_out(trial, sign_of(views.document(store.session, trial.experiment_id)))

    out = runtime.writer.write("stop_trial", run)
    runtime.metrics.stops.inc()
    runtime.wakeups.notify(out.experiment_id)
    return out
