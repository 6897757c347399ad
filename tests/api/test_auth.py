"""The role matrix: every route, with no token, a wrong token and each role."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, bearer, experiment_document

RANK = {"viewer": 0, "worker": 1, "admin": 2}

# (id, method, path, body, minimum role or None for open routes)
ROUTES: list[tuple[str, str, str, Any, str | None]] = [
    ("create-experiment", "POST", "/api/v1/experiments", experiment_document(), "admin"),
    ("list-experiments", "GET", "/api/v1/experiments", None, "viewer"),
    ("get-experiment", "GET", "/api/v1/experiments/{e}", None, "viewer"),
    ("pause", "POST", "/api/v1/experiments/{e}/pause", None, "admin"),
    ("resume", "POST", "/api/v1/experiments/{e}/resume", None, "admin"),
    ("cancel", "POST", "/api/v1/experiments/{x}/cancel", None, "admin"),
    ("list-trials", "GET", "/api/v1/experiments/{e}/trials", None, "viewer"),
    ("rungs", "GET", "/api/v1/experiments/{e}/rungs", None, "viewer"),
    ("curves", "GET", "/api/v1/experiments/{e}/curves", None, "viewer"),
    ("get-trial", "GET", "/api/v1/trials/{t}", None, "viewer"),
    ("stop-trial", "POST", "/api/v1/trials/{t}/stop", None, "admin"),
    ("claim", "POST", "/api/v1/experiments/{e}/claims", {"wait_s": 0}, "worker"),
    ("claim-any", "POST", "/api/v1/claims", {}, "worker"),
    ("report", "POST", "/api/v1/jobs/{j}/reports",
     {"lease_token": "{lt}", "step": 1, "value": 0.5}, "worker"),
    ("heartbeat", "POST", "/api/v1/jobs/{j}/heartbeat", {"lease_token": "{lt}"}, "worker"),
    ("complete", "POST", "/api/v1/jobs/{j}/complete", {"lease_token": "{lt}"}, "worker"),
    ("fail", "POST", "/api/v1/jobs/{j}/fail", {"lease_token": "{lt}", "error": "x"}, "worker"),
    ("release", "POST", "/api/v1/jobs/{j}/release", {"lease_token": "{lt}"}, "worker"),
    ("output", "POST", "/api/v1/jobs/{j}/output", {"lease_token": "{lt}", "text": "hi"},
     "worker"),
    ("register-worker", "POST", "/api/v1/workers", {"worker_id": "w", "host": "h"}, "worker"),
    ("list-workers", "GET", "/api/v1/workers", None, "viewer"),
    ("create-token", "POST", "/api/v1/tokens", {"role": "viewer", "name": "v"}, "admin"),
    ("healthz", "GET", "/healthz", None, None),
    ("metrics", "GET", "/metrics", None, None),
]
CALLERS = ["none", "wrong", "viewer", "worker", "admin"]


@pytest.fixture
def api(shared_api: Api) -> Api:
    return shared_api


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _expected(caller: str, minimum: str | None) -> set[int] | None:
    """The status expected, or None for "allowed" (anything but 401/403/5xx)."""
    if minimum is None:
        return None
    if caller in ("none", "wrong"):
        return {401}
    return {403} if RANK[caller] < RANK[minimum] else None


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    ("method", "path", "body", "minimum"), [r[1:] for r in ROUTES], ids=[r[0] for r in ROUTES]
)
def test_role_matrix(
    api: Api, method: str, path: str, body: Any, minimum: str | None, caller: str
) -> None:
    experiment = api.create_experiment()
    other = api.create_experiment()
    job = api.claim(experiment["id"], worker_id="w").json()
    ids = {"e": experiment["id"], "x": other["id"], "t": job["trial_id"], "j": job["job_id"],
           "lt": job["lease_token"]}
    fixed = {"none": {}, "wrong": bearer("not-a-token")}
    headers = fixed[caller] if caller in fixed else api.as_(caller)
    answer = api.client.request(
        method, _fill(path, ids), json=_fill(body, ids), headers=headers
    )
    expected = _expected(caller, minimum)
    if expected is None:
        assert answer.status_code < 500 and answer.status_code not in (401, 403), answer.text
    else:
        assert answer.status_code in expected, answer.text
        out = answer.json()
        assert set(out) == {"error", "detail"}
        assert out["error"] == ("unauthorized" if 401 in expected else "forbidden")
