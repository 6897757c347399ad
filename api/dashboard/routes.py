"""The dashboard router: HTML pages at ``/ui...``, static files at ``/ui/static/...`` and the
few JSON reads the pages need beyond ``/api/v1`` at ``/ui/api/...``.

Pages are static shells (no data, no token needed to load them); every piece of data comes
from JSON routes that check the bearer token like the rest of the API:

- ``GET /ui/api/whoami``: the role of the token (``{"role": ...}``).
- ``GET /ui/api/experiments/{id}/curves``: learning curves grouped by trial state, ready for
  one Plotly ``scattergl`` trace per state (``null`` between trials), downsampled.
- ``GET /ui/api/experiments/{id}/parcoords``: parameters against the value at each trial's
  highest rung, as Plotly ``parcoords`` dimensions.
- ``GET /ui/api/experiments/{id}/importance``: parameter importances and the method.
- ``GET /ui/api/experiments/{id}/best-so-far``: the best rung value so far, over wall time
  and over resource spent (one point per improvement).
- ``GET /ui/api/experiments/{id}/compare?trial=N&trial=M``: a few trials side by side.
- ``GET /ui/api/workers``: workers with their leased jobs and lost leases.
- ``GET /ui/api/trials/{id}/workers``: the workers that ran a trial's jobs.

The actions (pause, resume, cancel, stop trial) go to ``/api/v1``, which refuses them (403)
for anything but an admin token.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from api.auth import require
from api.dashboard import data, pages
from api.deps import Runtime, RuntimeDep
from tuner.tokens import Role

router = APIRouter(tags=["dashboard"])

Id = Annotated[int, PathParam(ge=1, le=2**31 - 1)]
Number = Annotated[int, PathParam(ge=0, le=2**31 - 1)]
ViewerRole = Annotated[Role, Depends(require("viewer"))]
Viewer = Depends(require("viewer"))

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: A request naming the current ``?v=`` may keep the file for a year; otherwise an hour.
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "public, max-age=3600"


# ---- pages ----------------------------------------------------------------------------------
def _page(
    page: str, title: str, *, charts: bool = False, item_id: int | None = None
) -> HTMLResponse:
    return HTMLResponse(
        pages.render(page, title, item_id=item_id, charts=charts),
        headers=pages.headers(charts=charts),
    )


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def experiments_page() -> HTMLResponse:
    return _page("experiments", "Experiments")


@router.get("/ui/", include_in_schema=False)
def experiments_slash() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=308)


@router.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
def login_page() -> HTMLResponse:
    return _page("login", "Log in")


@router.get("/ui/experiments/{experiment_id}", response_class=HTMLResponse,
            include_in_schema=False)
def experiment_page(experiment_id: Id) -> HTMLResponse:
    return _page("experiment", f"Experiment {experiment_id}", item_id=experiment_id, charts=True)


@router.get("/ui/experiments/{experiment_id}/trials/{number}", response_class=HTMLResponse,
            include_in_schema=False)
def trial_page(experiment_id: Id, number: Number) -> HTMLResponse:
    return HTMLResponse(
        pages.render("trial", f"experiment {experiment_id} › trial {number}", charts=True,
                     numbers={"experiment": experiment_id, "number": number}),
        headers=pages.headers(charts=True),
    )


@router.get("/ui/trials/{trial_id}", include_in_schema=False)
def trial_page_by_id(trial_id: Id, runtime: RuntimeDep) -> Response:
    """The old address of a trial page: 307 to ``/ui/experiments/{id}/trials/{number}``."""
    found = runtime.read("dashboard_trial_address", lambda s: data.trial_address(s, trial_id))
    if found is None:
        return Response(status_code=404, content=f"no trial {trial_id}".encode(),
                        media_type="text/plain")
    experiment_id, number = found
    return RedirectResponse(f"/ui/experiments/{experiment_id}/trials/{number}", status_code=307)


@router.get("/ui/workers", response_class=HTMLResponse, include_in_schema=False)
def workers_page() -> HTMLResponse:
    return _page("workers", "Workers")


# ---- static files ---------------------------------------------------------------------------
class _StaticFile:
    """One file kept in memory with its gzip form and ETag (files are small, except
    Plotly: 4.8 MB, 1.4 MB gzipped)."""

    def __init__(self, path: Path, content_type: str, etag: str) -> None:
        self.body = path.read_bytes()
        self.gzipped = gzip.compress(self.body, compresslevel=6)
        self.content_type = content_type
        self.etag = f'"{etag}"'


_files: dict[str, _StaticFile] = {}
_files_lock = threading.Lock()


def _static_file(name: str) -> _StaticFile | None:
    with _files_lock:
        found = _files.get(name)
        if found is not None:
            return found
        if name == "plotly.min.js":
            path = pages.plotly_js_path()
        else:
            if "/" in name or "\\" in name or name.startswith("."):
                return None
            path = pages.STATIC_DIR / name
            if path.suffix not in _CONTENT_TYPES or not path.is_file():
                return None
        suffix = path.suffix
        found = _StaticFile(path, _CONTENT_TYPES[suffix], pages.static_version(name))
        _files[name] = found
        return found


@router.get("/ui/static/{name}", include_in_schema=False)
def static(name: str, request: Request, v: str | None = None) -> Response:
    """Our JS and CSS, and Plotly from the plotly package: ETag, long caching when the URL
    names the current version, gzip when the browser takes it."""
    found = _static_file(name)
    if found is None:
        return Response(status_code=404, content=b"not found", media_type="text/plain")
    headers = {
        "ETag": found.etag,
        "Cache-Control": _IMMUTABLE if v == found.etag.strip('"') else _REVALIDATE,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(found.gzipped, media_type=found.content_type, headers=headers)
    return Response(found.body, media_type=found.content_type, headers=headers)


# ---- JSON for the pages ---------------------------------------------------------------------
@router.get("/ui/api/whoami")
def whoami(role: ViewerRole) -> dict[str, str]:
    """The role of the bearer token: ``admin``, ``worker`` or ``viewer``."""
    return {"role": role}


def _versioned(
    request: Request, runtime: Runtime, operation: str, experiment_id: int,
    compute: Callable[[Session], dict[str, Any]],
) -> Response:
    """Answer 304 when the browser's ETag still matches the experiment's fingerprint
    (:func:`data.version`), else compute the answer in the same read transaction."""

    def run(session: Session) -> Response:
        etag = f'W/"{data.version(session, experiment_id)}"'
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return JSONResponse(compute(session), headers=headers)

    return runtime.read(operation, run)


@router.get("/ui/api/experiments/{experiment_id}/curves", dependencies=[Viewer])
def curves(
    experiment_id: Id, request: Request, runtime: RuntimeDep,
    max_trials: Annotated[int, Query(ge=1, le=1000)] = 200,
    max_points: Annotated[int, Query(ge=2, le=2000)] = 40,
) -> Response:
    """Curves grouped by trial state (one trace each), plus the best trial's curve."""
    return _versioned(
        request, runtime, "dashboard_curves", experiment_id,
        lambda s: data.curves(s, experiment_id, max_trials, max_points),
    )


@router.get("/ui/api/experiments/{experiment_id}/parcoords", dependencies=[Viewer])
def parcoords(experiment_id: Id, request: Request, runtime: RuntimeDep) -> Response:
    """Parameters against the value at each trial's highest rung."""
    return _versioned(
        request, runtime, "dashboard_parcoords", experiment_id,
        lambda s: data.parcoords(s, experiment_id),
    )


@router.get("/ui/api/experiments/{experiment_id}/importance", dependencies=[Viewer])
def importance(experiment_id: Id, request: Request, runtime: RuntimeDep) -> Response:
    """Parameter importances (random forest, impurity-based), cached per rung results."""
    return _versioned(
        request, runtime, "dashboard_importance", experiment_id,
        lambda s: data.importance(s, experiment_id),
    )


@router.get("/ui/api/experiments/{experiment_id}/best-so-far", dependencies=[Viewer])
def best_so_far(experiment_id: Id, request: Request, runtime: RuntimeDep) -> Response:
    """The best value at a rung so far, over wall time and over resource spent."""
    return _versioned(
        request, runtime, "dashboard_best_so_far", experiment_id,
        lambda s: data.best_so_far(s, experiment_id),
    )


@router.get("/ui/api/experiments/{experiment_id}/compare", dependencies=[Viewer])
def compare(
    experiment_id: Id, request: Request, runtime: RuntimeDep,
    trial: Annotated[list[Annotated[int, Query(ge=0, le=2**31 - 1)]], Query(
        min_length=1, max_length=data.MAX_COMPARE,
        description="trial numbers (repeat the parameter: ?trial=3&trial=7)")],
    max_points: Annotated[int, Query(ge=2, le=2000)] = 200,
) -> Response:
    """A few trials side by side: fields, learning curves and rung values."""
    return _versioned(
        request, runtime, "dashboard_compare", experiment_id,
        lambda s: data.compare(s, experiment_id, trial, max_points),
    )


@router.get("/ui/api/workers", dependencies=[Viewer])
def workers(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Workers with their current jobs and lost leases, most recently seen first."""
    now = runtime.now()
    return runtime.read("dashboard_workers", lambda s: data.workers(s, now, limit, offset))


@router.get("/ui/api/trials/{trial_id}/workers", dependencies=[Viewer])
def trial_workers(trial_id: Id, runtime: RuntimeDep) -> dict[str, Any]:
    """The workers that ran the trial's jobs."""
    return runtime.read("dashboard_trial_workers", lambda s: data.trial_workers(s, trial_id))
