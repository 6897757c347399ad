"""Worker agents and API tokens."""

from __future__ import annotations

from fastapi import APIRouter

from api import views
from api.auth import Admin, Viewer, Worker
from api.deps import Limit, Offset, RuntimeDep
from api.shapes import worker_out
from tuner.coordinator import hash_token
from tuner.errors import NotFound
from tuner.storage import queries
from tuner.storage.sql import SqlStore
from tuner.tokens import create_token
from tuner.wire import ErrorOut, TokenIn, TokenOut, WorkerIn, WorkerOut, WorkerPageOut

router = APIRouter(
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)


@router.post("/workers", response_model=WorkerOut, tags=["workers"], dependencies=[Worker])
def register_worker(body: WorkerIn, runtime: RuntimeDep) -> WorkerOut:
    """Register a worker agent (again: update it and its last-seen time)."""
    return runtime.writer.write("register_worker", lambda store: worker_out(queries.upsert_worker(
        store.session, body.worker_id, body.host, runtime.now(), gpus=list(body.gpus),
        cpus=body.cpus, slots=body.slots, labels=dict(body.labels),
    )))


@router.get("/workers", response_model=WorkerPageOut, tags=["workers"], dependencies=[Viewer])
def list_workers(runtime: RuntimeDep, limit: Limit = 100, offset: Offset = 0) -> WorkerPageOut:
    """Workers, most recently seen first, with the jobs each holds now."""
    return runtime.read("list_workers", lambda s: views.worker_page(s, limit, offset))


@router.post(
    "/tokens", status_code=201, response_model=TokenOut, tags=["tokens"], dependencies=[Admin]
)
def new_token(body: TokenIn, runtime: RuntimeDep) -> TokenOut:
    """Create an API token with a role; the token is shown only in this answer."""

    def run(store: SqlStore) -> TokenOut:
        token = create_token(store.session, body.role, body.name)
        info = queries.token_by_hash(store.session, hash_token(token))
        if info is None:  # pragma: no cover - just inserted in this transaction
            raise NotFound("the new token vanished")
        return TokenOut(id=info.id, name=info.name, role=body.role, token=token)

    return runtime.writer.write("create_token", run)
