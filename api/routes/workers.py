"""Worker agents."""

from __future__ import annotations

from fastapi import APIRouter

from api import views
from api.auth import Viewer, Worker
from api.deps import Limit, Offset, RuntimeDep
from api.shapes import worker_out
from tuner.storage import queries
from tuner.wire import ErrorOut, WorkerIn, WorkerOut, WorkerPageOut

router = APIRouter(
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)


@router.post("/workers", response_model=WorkerOut, tags=["workers"], dependencies=[Worker])
def register_worker(body: WorkerIn, runtime: RuntimeDep) -> WorkerOut:
    """Register a worker agent (again: update it, its GPU readings, its job count and its
    last-seen time). The agent repeats it every 30 s; ``exiting`` shows it offline at once."""
    now = runtime.now()
    stats = None if body.gpu_stats is None else [g.model_dump() for g in body.gpu_stats]
    return runtime.writer.write("register_worker", lambda store: worker_out(queries.upsert_worker(
        store.session, body.worker_id, body.host, now, gpus=list(body.gpus),
        cpus=body.cpus, slots=body.slots, labels=dict(body.labels), gpu_stats=stats,
        jobs_done=body.jobs_done, exiting=body.exiting,
    ), now))


@router.get("/workers", response_model=WorkerPageOut, tags=["workers"], dependencies=[Viewer])
def list_workers(runtime: RuntimeDep, limit: Limit = 100, offset: Offset = 0) -> WorkerPageOut:
    """Workers, most recently seen first, with the jobs each holds now and their state:
    ``busy``, ``idle``, or ``offline`` (exited, or not seen for 90 s)."""
    now = runtime.now()
    return runtime.read("list_workers", lambda s: views.worker_page(s, limit, offset, now))

