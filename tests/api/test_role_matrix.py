"""The role matrix, read from the app itself: every route that ``/openapi.json`` lists (and
every route it hides: the dashboard's pages, the docs) has a row in :data:`ROWS`, and every
row a route; each route is called with no token, a wrong token and a token of each role.

Expected: no token or a wrong one is 401, a role below the row's minimum is 403 (also with
a body that fails validation: the token is checked first), an admitted role gets anything
but 401, 403 or a 5xx (a 404, 409 or 422 proves the token was accepted). Open routes give
every caller the row's status. The rules are api/auth.py's: viewers read, workers also
claim, report, heartbeat, complete, fail, release, post output and register workers, admins
do everything; /healthz, /metrics (unless ``TUNER_METRICS_REQUIRE_ADMIN``), the docs and
the dashboard's pages and static files are open, the dashboard's JSON is for viewers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Route

from tests.api.conftest import Api, bearer
from tests.factories import asha_document

RANK = {"viewer": 0, "worker": 1, "admin": 2}
CALLERS = ("none", "wrong", "viewer", "worker", "admin")
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
#: A body no route's model accepts: sent by callers who must be refused before validation.
INVALID_BODY: list[Any] = []
LEASED = {"lease_token": "{lease_token}"}


@dataclass(frozen=True)
class Row:
    """One route's rule: its lowest admitted role, or None with the status every caller
    gets; a body that passes validation (``{name}`` strings are filled from the objects);
    which object each path parameter names (by default the object of the same name)."""

    minimum: str | None
    body: Any = None
    status: int = 200
    ids: Mapping[str, str] = field(default_factory=dict)


def viewer() -> Row:
    return Row("viewer")


def worker(body: Any = None) -> Row:
    return Row("worker", body)


def admin(body: Any = None, **ids: str) -> Row:
    return Row("admin", body, ids=ids)


def open_(status: int = 200) -> Row:
    return Row(None, status=status)


V1, EXPERIMENT, JOB = "/api/v1", "/api/v1/experiments/{experiment_id}", "/api/v1/jobs/{job_id}"
ROWS: dict[tuple[str, str], Row] = {
    # experiments and trials
    ("POST", f"{V1}/experiments"): admin(asha_document()),
    ("GET", f"{V1}/experiments"): viewer(),
    ("GET", EXPERIMENT): viewer(),
    ("POST", f"{EXPERIMENT}/pause"): admin(),
    ("POST", f"{EXPERIMENT}/resume"): admin(),
    ("POST", f"{EXPERIMENT}/cancel"): admin(experiment_id="other_experiment"),
    ("GET", f"{EXPERIMENT}/trials"): viewer(),
    ("GET", f"{EXPERIMENT}/rungs"): viewer(),
    ("GET", f"{EXPERIMENT}/curves"): viewer(),
    ("GET", f"{EXPERIMENT}/export"): viewer(),
    ("GET", f"{V1}/trials/{{trial_id}}"): viewer(),
    ("POST", f"{V1}/trials/{{trial_id}}/stop"): admin(),
    ("GET", f"{EXPERIMENT}/trials/{{number}}"): viewer(),
    ("POST", f"{EXPERIMENT}/trials/{{number}}/stop"): admin(),
    ("GET", f"{EXPERIMENT}/failures"): viewer(),
    # the job protocol
    ("POST", f"{EXPERIMENT}/claims"): worker({"wait_s": 0}),
    ("POST", f"{V1}/claims"): worker({}),
    ("POST", f"{JOB}/reports"): worker({**LEASED, "step": 1, "value": 0.5}),
    ("POST", f"{JOB}/heartbeat"): worker(LEASED),
    ("POST", f"{JOB}/complete"): worker({**LEASED, "value": 0.25}),
    ("POST", f"{JOB}/fail"): worker({**LEASED, "error": "boom"}),
    ("POST", f"{JOB}/release"): worker(LEASED),
    ("POST", f"{JOB}/output"): worker({**LEASED, "text": "hi"}),
    # workers and tokens
    ("POST", f"{V1}/workers"): worker({"worker_id": "w", "host": "h"}),
    ("GET", f"{V1}/workers"): viewer(),
    ("POST", f"{V1}/tokens"): admin({"role": "viewer", "name": "v"}),
    ("GET", f"{V1}/tokens"): admin(),
    # a token made for the row: the shared app's own tokens must stay valid
    ("POST", f"{V1}/tokens/{{token_id}}/revoke"): admin(),
    # health and metrics
    ("GET", "/healthz"): open_(),
    ("GET", "/metrics"): open_(),
    # the dashboard: pages and static files are open, the JSON it reads is for viewers
    ("GET", "/ui"): open_(),
    ("GET", "/ui/"): open_(308),
    ("GET", "/ui/login"): open_(),
    ("GET", "/ui/experiments/{experiment_id}"): open_(),
    ("GET", "/ui/trials/{trial_id}"): open_(307),  # to the trial's EXP/NUM address
    ("GET", "/ui/experiments/{experiment_id}/trials/{number}"): open_(),
    ("GET", "/ui/workers"): open_(),
    ("GET", "/ui/static/{name}"): open_(),
    ("GET", "/ui/api/whoami"): viewer(),
    ("GET", "/ui/api/experiments/{experiment_id}/curves"): viewer(),
    ("GET", "/ui/api/experiments/{experiment_id}/parcoords"): viewer(),
    ("GET", "/ui/api/experiments/{experiment_id}/importance"): viewer(),
    ("GET", "/ui/api/experiments/{experiment_id}/best-so-far"): viewer(),
    ("GET", "/ui/api/experiments/{experiment_id}/compare"): viewer(),  # 422 without ?trial=
    ("GET", "/ui/api/workers"): viewer(),
    ("GET", "/ui/api/trials/{trial_id}/workers"): viewer(),
    # FastAPI's documentation
    ("GET", "/openapi.json"): open_(),
    ("GET", "/docs"): open_(),
    ("GET", "/docs/oauth2-redirect"): open_(),
    ("GET", "/redoc"): open_(),
}


@pytest.fixture
def api(shared_api: Api) -> Api:
    return shared_api


# ---- the routes the app has --------------------------------------------------------------------
def openapi_routes(api: Api) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation that ``/openapi.json`` lists."""
    answer = api.client.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    return {
        (method.upper(), path)
        for path, operations in answer.json()["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }


def _walk(
    routes: Iterable[BaseRoute], prefix: str, unknown: list[str]
) -> Iterator[tuple[str, str]]:
    for route in routes:
        # FastAPI 0.16x keeps an included router whole, behind a wrapper; older ones copy its
        # routes into the app with the prefix already applied.
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _walk(included.routes, prefix + getattr(context, "prefix", ""), unknown)
        elif isinstance(route, Route) and route.methods:
            # Starlette answers HEAD for every GET: not a route of its own.
            yield from ((method, prefix + route.path) for method in route.methods - {"HEAD"})
        else:
            unknown.append(repr(route))


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the app serves, those hidden from the schema too."""
    unknown: list[str] = []
    found = set(_walk(app.routes, "", unknown))
    assert not unknown, f"routes of a kind this test cannot call (teach it): {unknown}"
    return found


def test_role_matrix_has_a_row_for_every_route_and_a_route_for_every_row(api: Api) -> None:
    listed = openapi_routes(api)
    served = app_routes(api.client.app)  # type: ignore[arg-type]
    missing = sorted((listed | served) - ROWS.keys())
    assert not missing, f"routes without a row in ROWS (give each its minimum role): {missing}"
    stale = sorted(ROWS.keys() - (listed | served))
    assert not stale, f"rows in ROWS for routes that no longer exist (remove them): {stale}"
    assert listed <= served, f"in /openapi.json but not served: {sorted(listed - served)}"


# ---- calling each route as each caller ---------------------------------------------------------
class Objects:
    """Real objects for path parameters and bodies, made on first use (in this row only)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    @cached_property
    def experiment_id(self) -> int:
        return int(self.api.create_experiment()["id"])

    @cached_property
    def other_experiment(self) -> int:
        return int(self.api.create_experiment()["id"])

    @cached_property
    def job(self) -> dict[str, Any]:
        answer = self.api.claim(self.experiment_id, worker_id="w")
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        return job

    @cached_property
    def spare_token(self) -> int:
        answer = self.api.post("/tokens", {"role": "viewer", "name": "to revoke"}, role="admin")
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def get(self, name: str) -> Any:
        values: dict[str, Callable[[], Any]] = {
            "experiment_id": lambda: self.experiment_id,
            "other_experiment": lambda: self.other_experiment,
            "trial_id": lambda: self.job["trial_id"],
            "job_id": lambda: self.job["job_id"],
            "lease_token": lambda: self.job["lease_token"],
            "token_id": lambda: self.spare_token,
            "name": lambda: "style.css",  # one of the dashboard's static files
            "number": lambda: self.job["trial_number"],
        }
        if name not in values:
            raise KeyError(f"no object for {{{name}}}: add one to Objects.get")
        return values[name]()


def _fill(value: Any, objects: Objects) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return objects.get(value[1:-1])
    if isinstance(value, dict):
        return {key: _fill(item, objects) for key, item in value.items()}
    return value


def _path(path: str, row: Row, objects: Objects) -> str:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return path.format(**{name: objects.get(row.ids.get(name, name)) for name in names})


def _headers(api: Api, caller: str) -> dict[str, str]:
    if caller == "none":
        return {}
    if caller == "wrong":
        return bearer("not-a-token")
    return api.as_(caller)


def _expected(row: Row, caller: str) -> str:
    if row.minimum is None:
        return str(row.status)
    if caller in ("none", "wrong"):
        return "401"
    return "403" if RANK[caller] < RANK[row.minimum] else "allowed"


def _outcome(answer: httpx.Response, expected: str) -> str:
    """The answer in the terms of :func:`_expected`."""
    status = answer.status_code
    if expected == "allowed" and status not in (401, 403) and status < 500:
        return "allowed"
    if status in (401, 403):
        body = answer.json()
        wanted = {"error": "unauthorized" if status == 401 else "forbidden"}
        if set(body) != {"error", "detail"} or body["error"] != wanted["error"]:
            return f"{status} with body {body}"
    return str(status)


@pytest.mark.parametrize(("method", "path"), list(ROWS), ids=[f"{m} {p}" for m, p in ROWS])
def test_role_matrix(api: Api, method: str, path: str) -> None:
    row = ROWS[(method, path)]
    objects = Objects(api)
    url = _path(path, row, objects)
    body = _fill(row.body, objects)
    expected, got, texts = {}, {}, {}
    for caller in CALLERS:
        want = _expected(row, caller)
        bodies = [body]
        if row.body is not None and want in ("401", "403"):
            bodies.append(INVALID_BODY)  # refused before the body is looked at
        for sent in bodies:
            answer = api.client.request(
                method, url, json=sent, headers=_headers(api, caller), follow_redirects=False
            )
            key = caller if sent is body else f"{caller}, invalid body"
            expected[key], got[key] = want, _outcome(answer, want)
            texts[key] = f"{answer.status_code} {answer.text[:200]}"
    wrong = {
        key: f"expected {expected[key]}, got {texts[key]}"
        for key in expected
        if got[key] != expected[key]
    }
    assert got == expected, f"{method} {url}: {wrong}"
