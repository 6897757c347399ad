"""Liveness and metrics (open: no token; see ``Settings.metrics_require_admin``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.auth import authorize
from api.deps import RuntimeDep
from tuner.wire import ErrorOut, HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": ErrorOut}})
def healthz(runtime: RuntimeDep) -> HealthOut:
    """200 when the process serves and its database answers."""
    runtime.read("healthz", lambda s: s.execute(text("SELECT 1")))
    return HealthOut(status="ok", database=runtime.engine.dialect.name)


@router.get(
    "/metrics", response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request, runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process. Open by default (they carry counts and latencies,
    no data); with ``TUNER_METRICS_REQUIRE_ADMIN=true`` an admin token is needed."""
    if runtime.settings.metrics_require_admin:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
        authorize(request.app.state.authenticator, given, "admin")
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
