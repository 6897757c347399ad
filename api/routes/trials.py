"""One trial: its history, and stopping it by hand; by its id (for machines) or by its
number in its experiment (``EXP/NUM``, what people see and type)."""

from __future__ import annotations

from collections.abc import Callable

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


@router.get(
    "/experiments/{experiment_id}/trials/{number}", response_model=TrialDetailOut,
    dependencies=[Viewer],
)
def get_trial_by_number(experiment_id: Id, number: Id, runtime: RuntimeDep) -> TrialDetailOut:
    """Trial ``number`` (0-based) of an experiment, as ``GET /trials/{trial_id}`` answers it."""
    return runtime.read(
        "get_trial",
        lambda s: views.trial(s, views.trial_id_of(s, experiment_id, number)),
    )


@router.post(
    "/trials/{trial_id}/stop", response_model=TrialOut, dependencies=[Admin],
    responses={409: {"model": ErrorOut}},
)
def stop_trial(trial_id: Id, runtime: RuntimeDep) -> TrialOut:
    """Stop a trial: a running one gets ``stop`` at its next report or heartbeat; a paused or
    queued one stops now. It is ranked worst at the rung it worked toward."""
    return _stop(runtime, lambda _store: trial_id)


@router.post(
    "/experiments/{experiment_id}/trials/{number}/stop", response_model=TrialOut,
    dependencies=[Admin], responses={409: {"model": ErrorOut}},
)
def stop_trial_by_number(experiment_id: Id, number: Id, runtime: RuntimeDep) -> TrialOut:
    """Stop trial ``number`` of an experiment, as ``POST /trials/{trial_id}/stop`` does."""
    return _stop(runtime, lambda store: views.trial_id_of(store.session, experiment_id, number))


def _stop(runtime: RuntimeDep, trial_id_in: Callable[[SqlStore], int]) -> TrialOut:
    def run(store: SqlStore) -> TrialOut:
        trial = coordinator.stop_trial(store, trial_id_in(store), runtime.now())
        return trial_out(trial, sign_of(views.document(store.session, trial.experiment_id)))

    out = runtime.writer.write("stop_trial", run)
    runtime.metrics.stops.inc()
    runtime.wakeups.notify(out.experiment_id)
    return out
