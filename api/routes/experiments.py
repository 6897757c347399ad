"""Experiments: create, list, read, pause, resume, cancel; their trials, rungs and curves."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from api import views
from api.auth import Admin, Viewer
from api.deps import Id, Limit, Offset, RuntimeDep
from api.validation import reject_unstorable
from tuner import coordinator
from tuner.domain import ExperimentState, TrialState
from tuner.storage import queries
from tuner.storage.sql import SqlStore
from tuner.wire import (
    CurvesOut,
    ErrorOut,
    ExperimentOut,
    ExperimentPageOut,
    FailuresOut,
    RungsOut,
    TrialPageOut,
)

router = APIRouter(
    tags=["experiments"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}


@router.post(
    "/experiments", status_code=201, response_model=ExperimentOut, dependencies=[Admin],
)
def create_experiment(
    runtime: RuntimeDep,
    document: Annotated[dict[str, Any], Body(description="an experiment document")],
) -> ExperimentOut:
    """Create a running experiment from an experiment document (see ``tuner.config``)."""
    reject_unstorable(document)

    def run(store: SqlStore) -> ExperimentOut:
        created = coordinator.create_experiment(store, document, runtime.now())
        return views.experiment(store.session, created.id)

    out = runtime.writer.write("create_experiment", run)
    runtime.wakeups.notify(out.id)
    return out


@router.get("/experiments", response_model=ExperimentPageOut, dependencies=[Viewer])
def list_experiments(
    runtime: RuntimeDep, limit: Limit = 20, offset: Offset = 0,
    state: ExperimentState | None = None,
) -> ExperimentPageOut:
    """Experiments, newest first, with trials per state and the best trial."""
    return runtime.read(
        "list_experiments", lambda s: views.experiment_page(s, limit, offset, state)
    )


@router.get(
    "/experiments/{experiment_id}", response_model=ExperimentOut, dependencies=[Viewer],
    responses=NOT_FOUND,
)
def get_experiment(experiment_id: Id, runtime: RuntimeDep) -> ExperimentOut:
    """One experiment with its document and progress."""
    return runtime.read("get_experiment", lambda s: views.experiment(s, experiment_id))


def _act(runtime: RuntimeDep, experiment_id: int, action: str) -> ExperimentOut:
    def run(store: SqlStore) -> ExperimentOut:
        coordinator.change_state(store, experiment_id, action, runtime.now())
        return views.experiment(store.session, experiment_id)

    out = runtime.writer.write(action, run)
    runtime.wakeups.notify(experiment_id)
    return out


_ACTION = {"response_model": ExperimentOut, "dependencies": [Admin],
           "responses": {**NOT_FOUND, 409: {"model": ErrorOut}}}


@router.post("/experiments/{experiment_id}/pause", **_ACTION)  # type: ignore[arg-type]
def pause(experiment_id: Id, runtime: RuntimeDep) -> ExperimentOut:
    """No new jobs; running jobs go on, and their reports and results count, until they end."""
    return _act(runtime, experiment_id, "pause")


@router.post("/experiments/{experiment_id}/resume", **_ACTION)  # type: ignore[arg-type]
def resume(experiment_id: Id, runtime: RuntimeDep) -> ExperimentOut:
    """Hand out jobs again."""
    return _act(runtime, experiment_id, "resume")


@router.post("/experiments/{experiment_id}/cancel", **_ACTION)  # type: ignore[arg-type]
def cancel(experiment_id: Id, runtime: RuntimeDep) -> ExperimentOut:
    """End the experiment: queued and paused trials now, running ones at their next report or
    heartbeat (answered ``stop``)."""
    return _act(runtime, experiment_id, "cancel")


@router.get(
    "/experiments/{experiment_id}/trials", response_model=TrialPageOut, dependencies=[Viewer],
    responses=NOT_FOUND,
)
def list_trials(
    experiment_id: Id, runtime: RuntimeDep, state: TrialState | None = None,
    order_by: views.TrialOrderIn = "number", limit: Limit = 50, offset: Offset = 0,
) -> TrialPageOut:
    """Trials, filtered by state; ``order_by=value`` puts the best first."""
    return runtime.read(
        "list_trials",
        lambda s: views.trial_page(s, experiment_id, state, order_by, limit, offset),
    )


@router.get(
    "/experiments/{experiment_id}/rungs", response_model=RungsOut, dependencies=[Viewer],
    responses=NOT_FOUND,
)
def rungs(experiment_id: Id, runtime: RuntimeDep) -> RungsOut:
    """Every rung of every bracket: results, promotions, stops, and the value to beat."""
    return runtime.read("rungs", lambda s: views.rungs(s, experiment_id))


@router.get(
    "/experiments/{experiment_id}/failures", response_model=FailuresOut, dependencies=[Viewer],
    responses=NOT_FOUND,
)
def failures(
    experiment_id: Id, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> FailuresOut:
    """The latest failed jobs (the command failed) and lost ones (the worker stopped renewing
    the lease), newest first, with the end of each one's error text."""
    return runtime.read("failures", lambda s: views.failures(s, experiment_id, limit))


@router.get(
    "/experiments/{experiment_id}/curves", response_model=CurvesOut, dependencies=[Viewer],
    responses=NOT_FOUND,
)
def curves(
    experiment_id: Id, runtime: RuntimeDep,
    max_points: Annotated[int, Query(ge=2, le=2000)] = 200,
    max_trials: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = 100,
) -> CurvesOut:
    """Learning curves of the best trials, downsampled to about ``max_points`` each."""
    return runtime.read(
        "curves", lambda s: views.curves(s, experiment_id, max_points, max_trials)
    )
