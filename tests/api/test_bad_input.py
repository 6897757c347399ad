"""Bad input: every case gets a 4xx with an {"error", "detail"} body naming the problem."""

from __future__ import annotations

import os
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.errors import install_error_handlers
from tests.api.conftest import Api, bearer, experiment_document
from tests.conftest import POSTGRES_ENV
from tuner.storage.database import make_engine

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(shared_api: Api) -> Api:
    """The bad-input cases share one app per database kind; each makes its own rows."""
    return shared_api


@pytest.fixture
def job(api: Api) -> dict[str, Any]:
    experiment = api.create_experiment()
    answer = api.claim(experiment["id"], worker_id="w")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


# (id, body or raw text, expected status, error code, words the detail must contain)
REPORT_CASES = [
    ("unknown-field", {"step": 1, "value": 1.0, "bogus": 1}, 422, "invalid_request",
     ["body.bogus"]),
    ("step-not-int", {"step": "abc", "value": 1.0}, 422, "invalid_request",
     ["body.step", "valid integer"]),
    ("step-zero", {"step": 0, "value": 1.0}, 422, "invalid_request", ["body.step"]),
    ("step-negative", {"step": -3, "value": 1.0}, 422, "invalid_request", ["body.step"]),
    ("step-absurd", {"step": 10**12, "value": 1.0}, 422, "invalid_request", ["body.step"]),
    ("step-outside-job", {"step": 5, "value": 1.0}, 422, "out_of_range", ["step is 5"]),
    ("value-missing", {"step": 1}, 422, "invalid_request", ["value"]),
    ("value-string", {"step": 1, "value": "fast"}, 422, "invalid_request", ["body.value"]),
    ("value-and-kind", {"step": 1, "value": 1.0, "value_kind": "nan"}, 422, "invalid_request",
     ["value must be null"]),
    ("kind-unknown", {"step": 1, "value_kind": "huge"}, 422, "invalid_request",
     ["body.value_kind"]),
    ("bare-nan", '{"step": 1, "value": NaN}', 422, "invalid_request", ["body.value", "finite"]),
    ("bare-infinity", '{"step": 1, "value": Infinity}', 422, "invalid_request",
     ["body.value", "finite"]),
    ("bare-neg-infinity", '{"step": 1, "value": -Infinity}', 422, "invalid_request",
     ["body.value"]),
    ("overflow-number", '{"step": 1, "value": 1e999}', 422, "invalid_request", ["body.value"]),
    ("metric-nan", '{"step": 1, "value": 1, "metrics": {"acc": NaN}}', 422, "invalid_request",
     ["body.metrics.acc"]),
    ("too-many-metrics", {"step": 1, "value": 1.0, "metrics": {f"m{i}": i for i in range(33)}},
     422, "invalid_request", ["body.metrics"]),
    ("metric-not-scalar", {"step": 1, "value": 1.0, "metrics": {"a": [1, 2]}}, 422,
     "invalid_request", ["body.metrics.a"]),
    ("next-unknown-field", {"step": 1, "value": 1.0, "next": {"worker": "w"}}, 422,
     "invalid_request", ["body.next.worker"]),
    ("next-not-object", {"step": 1, "value": 1.0, "next": True}, 422, "invalid_request",
     ["body.next"]),
    ("next-empty-worker", {"step": 1, "value": 1.0, "next": {"worker_id": ""}}, 422,
     "invalid_request", ["body.next.worker_id"]),
    # No coercion: a number in a string, or a boolean, is not a value (or a step).
    ("value-numeric-string", {"step": 1, "value": "1.5"}, 422, "invalid_request",
     ["body.value"]),
    ("value-true", {"step": 1, "value": True}, 422, "invalid_request", ["body.value"]),
    ("step-numeric-string", {"step": "1", "value": 1.0}, 422, "invalid_request", ["body.step"]),
    ("step-float", {"step": 1.0, "value": 1.0}, 422, "invalid_request", ["body.step"]),
    # NUL cannot be stored (PostgreSQL's text refuses it): 422 on every database, not 503.
    ("checkpoint-nul", {"step": 1, "value": 1.0, "checkpoint": "ck\x00pt"}, 422,
     "invalid_request", ["checkpoint", "NUL"]),
    ("metric-name-nul", {"step": 1, "value": 1.0, "metrics": {"a\x00": 1.0}}, 422,
     "invalid_request", ["metrics", "NUL"]),
    ("metric-text-nul", {"step": 1, "value": 1.0, "metrics": {"note": "x\x00"}}, 422,
     "invalid_request", ["metrics.note", "NUL"]),
    ("not-json", "{step: 1", 422, "invalid_request", ["JSON"]),
    ("not-an-object", "[1, 2]", 422, "invalid_request", ["body"]),
    ("stale-token", {"step": 1, "value": 1.0, "lease_token": "stale"}, 409, "lease_expired",
     ["lease token"]),
    ("metric-mismatch", {"step": 1, "value": 0.9, "metric": "accuracy"}, 422,
     "metric_mismatch", ["optimises loss (min)", "for accuracy", "report loss"]),
    ("metric-empty", {"step": 1, "value": 0.9, "metric": ""}, 422, "invalid_request",
     ["body.metric"]),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "words"), [c[1:] for c in REPORT_CASES],
    ids=[c[0] for c in REPORT_CASES],
)
def test_bad_report(
    api: Api, job: dict[str, Any], body: Any, status: int, code: str, words: list[str]
) -> None:
    url = f"/api/v1/jobs/{job['job_id']}/reports"
    headers = {**api.as_("worker"), **JSON}
    if isinstance(body, dict):
        body = {"lease_token": job["lease_token"], **body}
        answer = api.client.post(url, json=body, headers=headers)
    else:
        text = body.replace('{"step"', f'{{"lease_token": "{job["lease_token"]}", "step"')
        answer = api.client.post(url, content=text, headers=headers)
    assert answer.status_code == status, answer.text
    out = answer.json()
    assert set(out) == {"error", "detail"}
    assert out["error"] == code
    for word in words:
        assert word in out["detail"], out["detail"]
    trial = api.get(f"/trials/{job['trial_id']}").json()
    assert trial["reports"] == []  # nothing half-written


OTHER_CASES = [
    ("unknown-route", "GET", "/api/v1/nothing", None, 404, "not_found"),
    ("wrong-method", "DELETE", "/api/v1/experiments", None, 405, "method_not_allowed"),
    ("unknown-experiment", "GET", "/api/v1/experiments/99999", None, 404, "not_found"),
    ("unknown-trial", "GET", "/api/v1/trials/99999", None, 404, "not_found"),
    ("unknown-trial-stop", "POST", "/api/v1/trials/99999/stop", None, 404, "not_found"),
    ("unknown-trial-number", "GET", "/api/v1/experiments/99999/trials/0", None, 404,
     "not_found"),
    ("unknown-trial-number-stop", "POST", "/api/v1/experiments/99999/trials/0/stop", None, 404,
     "not_found"),
    ("trial-number-negative", "GET", "/api/v1/experiments/1/trials/-1", None, 422,
     "invalid_request"),
    ("failures-unknown-experiment", "GET", "/api/v1/experiments/99999/failures", None, 404,
     "not_found"),
    ("failures-limit-zero", "GET", "/api/v1/experiments/1/failures?limit=0", None, 422,
     "invalid_request"),
    ("unknown-job", "POST", "/api/v1/jobs/99999/reports",
     {"lease_token": "t", "step": 1, "value": 1.0}, 404, "not_found"),
    ("unknown-job-complete", "POST", "/api/v1/jobs/99999/complete", {"lease_token": "t"}, 404,
     "not_found"),
    ("id-not-int", "GET", "/api/v1/experiments/abc", None, 422, "invalid_request"),
    ("id-negative", "GET", "/api/v1/trials/-1", None, 422, "invalid_request"),
    ("id-huge", "GET", "/api/v1/trials/99999999999999999999", None, 422, "invalid_request"),
    ("limit-zero", "GET", "/api/v1/experiments?limit=0", None, 422, "invalid_request"),
    ("bad-state-filter", "GET", "/api/v1/experiments?state=sleeping", None, 422,
     "invalid_request"),
    ("claim-wait-too-long", "POST", "/api/v1/claims", {"wait_s": 61}, 422, "invalid_request"),
    ("claim-unknown-field", "POST", "/api/v1/claims", {"gpus": 2}, 422, "invalid_request"),
    ("claim-unknown-experiment", "POST", "/api/v1/experiments/99999/claims", {}, 404,
     "not_found"),
    ("experiment-invalid-eta", "POST", "/api/v1/experiments",
     experiment_document(scheduler={"type": "asha", "eta": 1, "max_resource": 9}), 422,
     "invalid_config"),
    ("experiment-unknown-field", "POST", "/api/v1/experiments",
     experiment_document(colour="red"), 422, "invalid_config"),
    ("experiment-bad-space", "POST", "/api/v1/experiments",
     experiment_document(space={"lr": {"type": "float", "low": 1, "high": 0}}), 422,
     "invalid_config"),
    ("experiment-not-object", "POST", "/api/v1/experiments", [1, 2], 422, "invalid_request"),
    ("worker-unknown-field", "POST", "/api/v1/workers",
     {"worker_id": "w", "host": "h", "ram": 3}, 422, "invalid_request"),
    ("worker-negative-slots", "POST", "/api/v1/workers",
     {"worker_id": "w", "host": "h", "slots": -1}, 422, "invalid_request"),
    ("token-bad-role", "POST", "/api/v1/tokens", {"role": "root", "name": "x"}, 422,
     "invalid_request"),
    # NUL characters, anywhere a client sends text.
    ("experiment-name-nul", "POST", "/api/v1/experiments",
     experiment_document(name="a\x00b"), 422, "invalid_request"),
    ("experiment-choice-nul", "POST", "/api/v1/experiments",
     experiment_document(space={"opt": {"type": "categorical", "choices": ["adam", "s\x00"]}}),
     422, "invalid_request"),
    ("worker-id-nul", "POST", "/api/v1/workers", {"worker_id": "w\x00", "host": "h"}, 422,
     "invalid_request"),
    ("worker-host-nul", "POST", "/api/v1/workers", {"worker_id": "w", "host": "h\x00"}, 422,
     "invalid_request"),
    ("token-name-nul", "POST", "/api/v1/tokens", {"role": "viewer", "name": "t\x00"}, 422,
     "invalid_request"),
    ("claim-worker-nul", "POST", "/api/v1/claims", {"worker_id": "w\x00"}, 422,
     "invalid_request"),
    ("worker-slots-string", "POST", "/api/v1/workers",
     {"worker_id": "w", "host": "h", "slots": "2"}, 422, "invalid_request"),
    # Magnitudes no parameter needs, that break sampling or storage (docs/LIMITS.md).
    ("int-range-1e30", "POST", "/api/v1/experiments",
     experiment_document(space={"n": {"type": "int", "low": 0, "high": 1e30}}), 422,
     "invalid_config"),
    ("int-range-10-30", "POST", "/api/v1/experiments",
     experiment_document(space={"n": {"type": "int", "low": 0, "high": 10**30}}), 422,
     "invalid_config"),
    ("int-range-int64", "POST", "/api/v1/experiments",
     experiment_document(space={"n": {"type": "int", "low": -(2**63), "high": 2**63}}), 422,
     "invalid_config"),
    ("float-range-1e308", "POST", "/api/v1/experiments",
     experiment_document(space={"x": {"type": "float", "low": -1e308, "high": 1e308}}), 422,
     "invalid_config"),
    ("float-step-too-fine", "POST", "/api/v1/experiments",
     experiment_document(space={"x": {"type": "float", "low": 0, "high": 1e300, "step": 1e-10}},
                         sampler={"type": "grid"}), 422, "invalid_config"),
    ("grid-count-huge", "POST", "/api/v1/experiments",
     experiment_document(sampler={"type": "grid", "grid_count": 10**9}), 422, "invalid_config"),
    ("resource-units-2-70", "POST", "/api/v1/experiments",
     experiment_document(budget={"max_resource_units": 2**70}), 422, "invalid_config"),
    ("too-many-params", "POST", "/api/v1/experiments",
     experiment_document(space={f"p{i}": {"type": "float", "low": 0, "high": 1}
                                for i in range(501)}), 422, "invalid_config"),
    ("too-many-choices", "POST", "/api/v1/experiments",
     experiment_document(space={"c": {"type": "categorical", "choices": list(range(10_001))}}),
     422, "invalid_config"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"), [c[1:] for c in OTHER_CASES],
    ids=[c[0] for c in OTHER_CASES],
)
def test_bad_request(
    api: Api, method: str, path: str, body: Any, status: int, code: str
) -> None:
    before = api.get("/experiments").json()["total"]
    answer = api.client.request(method, path, json=body, headers=api.as_("admin"))
    assert answer.status_code == status, answer.text
    out = answer.json()
    assert set(out) == {"error", "detail"} and out["error"] == code, out
    assert out["detail"]
    assert api.get("/experiments").json()["total"] == before  # nothing half-written


def test_bad_experiment_detail_names_field_path(api: Api) -> None:
    doc = experiment_document(scheduler={"type": "asha", "eta": 1, "max_resource": 9})
    answer = api.post("/experiments", doc, role="admin")
    assert "scheduler.eta" in answer.json()["detail"]


def test_bare_nan_in_experiment_document(api: Api) -> None:
    text = '{"name": "x", "space": {"lr": {"type": "float", "low": NaN, "high": 1}}}'
    answer = api.client.post(
        "/api/v1/experiments", content=text, headers={**api.as_("admin"), **JSON}
    )
    assert answer.status_code == 422
    assert "body.space.lr.low" in answer.json()["detail"]


def test_huge_body_413_by_content_length(api: Api) -> None:
    answer = api.client.post(
        "/api/v1/claims", content=b"{" + b" " * 2_000_000 + b"}",
        headers={**api.as_("worker"), **JSON},
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"


def test_huge_body_413_when_streamed(api: Api) -> None:
    def chunks():  # no Content-Length: chunked transfer
        yield b"{"
        for _ in range(40):
            yield b" " * 65536
        yield b"}"

    answer = api.client.post(
        "/api/v1/claims", content=chunks(), headers={**api.as_("worker"), **JSON}
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"


def test_expired_lease_409_and_nothing_written(api: Api, job: dict[str, Any]) -> None:
    clock = api.client.app.state.runtime  # type: ignore[attr-defined]
    real = clock.clock
    clock.clock = lambda: real() + 3600  # an hour later: the lease has expired
    try:
        answer = api.post(
            f"/jobs/{job['job_id']}/reports",
            {"lease_token": job["lease_token"], "step": 1, "value": 1.0},
        )
    finally:
        clock.clock = real
    assert answer.status_code == 409 and answer.json()["error"] == "lease_expired"
    assert api.get(f"/trials/{job['trial_id']}").json()["reports"] == []


def test_heartbeat_wrong_token_header_scheme(api: Api) -> None:
    answer = api.client.get("/api/v1/experiments", headers={"Authorization": "Basic abc"})
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
    answer = api.client.get("/api/v1/experiments", headers=bearer("x" * 5000))
    assert answer.status_code == 401


def test_the_limits_name_the_field_and_the_rule(api: Api) -> None:
    doc = experiment_document(space={"n": {"type": "int", "low": 0, "high": 10**30}})
    detail = api.post("/experiments", doc, role="admin").json()["detail"]
    assert "space.n" in detail and "docs/LIMITS.md" in detail, detail
    doc = experiment_document(space={f"p{i}": {"type": "fixed", "value": i} for i in range(501)})
    detail = api.post("/experiments", doc, role="admin").json()["detail"]
    assert "501 parameters" in detail and "500" in detail, detail


def test_the_largest_allowed_ranges_sample_and_claim(api: Api) -> None:
    """At the limits themselves, claims work (the bounds are inclusive)."""
    experiment = api.create_experiment(
        space={
            "n": {"type": "int", "low": -(2**53), "high": 2**53},
            "x": {"type": "float", "low": -1e300, "high": 1e300},
        },
        sampler={"type": "grid", "grid_count": 10_000},
    )
    answer = api.claim(experiment["id"], worker_id="w")
    assert answer.status_code == 200, answer.text
    params = answer.json()["params"]
    assert -(2**53) <= params["n"] <= 2**53 and -1e300 <= params["x"] <= 1e300


@pytest.mark.parametrize("path", ["output", "fail"])
def test_nul_in_a_jobs_text_is_refused(api: Api, job: dict[str, Any], path: str) -> None:
    field = "text" if path == "output" else "error"
    body = {"lease_token": job["lease_token"], field: "line\x00"}
    answer = api.post(f"/jobs/{job['job_id']}/{path}", body)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"] and "NUL" in answer.json()["detail"]
    trial = api.get(f"/trials/{job['trial_id']}").json()
    assert trial["state"] == "running" and not trial["output_tail"]


@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"{POSTGRES_ENV} is not set")
def test_a_value_the_database_refuses_is_422_not_retry_later() -> None:
    """The net under the API's own checks: PostgreSQL's DataError (here a NUL in a text
    parameter, as a route that missed the check would send it) is a 422, never the
    retryable 503 that a retrying client would loop on."""
    engine = make_engine(os.environ[POSTGRES_ENV])
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/store")
    def store() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT CAST(:v AS TEXT)"), {"v": "a\x00b"})

    try:
        answer = TestClient(app).get("/store")
    finally:
        engine.dispose()
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_request" and "Retry-After" not in answer.headers
