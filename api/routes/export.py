"""An experiment's trials as CSV or JSON (the dashboard's trials table reads the JSON)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api import export as exporting
from api.auth import Viewer
from api.dashboard import data
from api.deps import Id, RuntimeDep
from tuner.wire import ErrorOut

router = APIRouter(
    tags=["experiments"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
               422: {"model": ErrorOut}},
)

ExportFormat = Annotated[
    Literal["csv", "json"], Query(alias="format", description="csv or json")
]


@router.get(
    "/experiments/{experiment_id}/export", dependencies=[Viewer],
    responses={200: {"content": {"application/json": {}, "text/csv": {}},
                     "description": "one row per trial, best first"}},
)
def export(
    experiment_id: Id, request: Request, runtime: RuntimeDep, fmt: ExportFormat = "json",
    limit: Annotated[int | None, Query(ge=1, le=100_000, description=(
        "at most this many trials (default: all)"))] = None,
    offset: Annotated[int, Query(ge=0, le=10**9, description=(
        "skip the first trials of the ranking"))] = 0,
) -> Response:
    """Every trial in ranking order (highest rung reached, then the value there, then the
    number): state, bracket, rung, resource, ranked step and value, best and last value,
    retries, checkpoint, times, parameters and the extra metrics of its latest report.
    ``format=csv`` answers a file (``experiment-<id>-trials.csv``) with ``param.<name>`` and
    ``metric.<name>`` columns. ``limit`` and ``offset`` read a slice of the ranking (the
    dashboard reads a large experiment in slices; ``total`` in the JSON counts them all).
    Answers 304 to an ``If-None-Match`` that still matches."""

    def run(session: Session) -> Response:
        etag = f'W/"{fmt}.{limit}.{offset}.{data.version(session, experiment_id)}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        table = exporting.export(session, experiment_id, limit, offset)
        if fmt == "json":
            return Response(exporting.to_json(table), media_type="application/json",
                            headers=headers)
        headers["Content-Disposition"] = (
            f'attachment; filename="experiment-{experiment_id}-trials.csv"'
        )
        return Response(exporting.to_csv(table), media_type="text/csv; charset=utf-8",
                        headers=headers)

    return runtime.read("export", run)
