"""The retry policy only (httpx.MockTransport): idempotent calls are repeated on connection
errors and 5xx, claims and experiment creation never; error bodies become typed errors."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable

import httpx
import pytest

from tuner.client import Client, RetryPolicy, job_from_env
from tuner.client.job import heartbeat_interval_s, value_fields
from tuner.errors import (
    ClientError,
    ConfigError,
    ConflictError,
    DuplicateReport,
    InvalidTransition,
    LeaseExpired,
    NotFound,
    StorageError,
)

FAST = RetryPolicy(attempts=4, base_delay_s=0.0, max_delay_s=0.0)

JOB = {
    "job_id": 7,
    "lease_token": "lt",
    "experiment_id": 1,
    "trial_id": 3,
    "trial_number": 2,
    "metric": "loss",
    "mode": "min",
    "params": {"lr": 0.1},
    "from_resource": 0,
    "to_resource": 3,
    "rung": 0,
    "bracket": 0,
    "checkpoint": None,
    "lease_expires_at": "2030-01-01T00:00:00Z",
}
DECISION = {"decision": "continue", "reason": {"rule": "continue"}}


def scripted(answers: list[Callable[[httpx.Request], httpx.Response]]) -> tuple[Client, list[str]]:
    """A client whose server answers with ``answers`` in turn; the log of requests."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return answers[min(len(seen) - 1, len(answers) - 1)](request)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test")
    return Client("http://test", "tok", http=http, retry=FAST), seen


def status(code: int, body: object = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json=body)


def down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


PAGE = {"items": [], "total": 0, "limit": 20, "offset": 0}


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (status(503, {"error": "storage_error", "detail": "busy"}), "503"),
        (status(502), "502"),
        (down, "connect"),
    ],
    ids=["503", "502", "connection"],
)
def test_retries_idempotent_get_then_succeeds(
    first: Callable[[httpx.Request], httpx.Response], kind: str
) -> None:
    client, seen = scripted([first, first, status(200, PAGE)])
    assert client.list_experiments().total == 0
    assert len(seen) == 3


def test_retries_reports_heartbeats_and_completions() -> None:
    for operation in ("reports", "heartbeat", "complete"):
        client, seen = scripted([status(500), status(200, DECISION)])
        client.job_call(7, operation, {"lease_token": "lt"})
        assert seen == [f"POST /api/v1/jobs/7/{operation}"] * 2


def test_retries_give_up_with_the_typed_error() -> None:
    client, seen = scripted([status(503, {"error": "storage_error", "detail": "db down"})])
    with pytest.raises(StorageError, match="db down"):
        client.get_experiment(1)
    assert len(seen) == FAST.attempts


@pytest.mark.parametrize("answer", [status(503), down], ids=["503", "connection"])
def test_never_retries_claims_or_experiment_creation(
    answer: Callable[[httpx.Request], httpx.Response],
) -> None:
    client, seen = scripted([answer, status(200, JOB)])
    with pytest.raises((StorageError, ClientError)):
        client.claim(1, wait_s=0)
    assert len(seen) == 1
    client, seen = scripted([answer, status(201, {})])
    from tests.worker.live import small_document

    with pytest.raises((StorageError, ClientError)):
        client.create_experiment(small_document())
    assert seen == ["POST /api/v1/experiments"]


def test_does_not_retry_client_errors() -> None:
    client, seen = scripted([status(409, {"error": "lease_expired", "detail": "stale"})])
    with pytest.raises(LeaseExpired):
        client.job_call(7, "reports", {"lease_token": "lt"})
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("code", "body", "error"),
    [
        (404, {"error": "not_found", "detail": "no experiment 9"}, NotFound),
        (409, {"error": "duplicate_report", "detail": "other value"}, DuplicateReport),
        (409, {"error": "invalid_transition", "detail": "cancelled"}, InvalidTransition),
        (409, {"error": "something_new", "detail": "?"}, ConflictError),
        (404, "not json", NotFound),
    ],
    ids=["not_found", "duplicate", "transition", "unknown-code", "no-body"],
)
def test_error_bodies_become_typed_errors(code: int, body: object, error: type) -> None:
    client, _ = scripted([status(code, body)])
    with pytest.raises(error):
        client.get_experiment(9)


def test_claim_answers_job_nothing_or_over() -> None:
    client, _ = scripted(
        [
            status(200, JOB),
            lambda r: httpx.Response(204),
            status(410, {"error": "experiment_over", "detail": "completed"}),
        ]
    )
    first, second, third = (client.claim(1, wait_s=0) for _ in range(3))
    assert first.job is not None and first.job.job_id == 7 and not first.over
    assert second.job is None and not second.over
    assert third.job is None and third.over


def test_non_finite_values_travel_as_value_kind() -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"decision": "stop", "reason": {"rule": "non_finite"}})

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://test")
    client = Client("http://test", "tok", http=http)
    decision = client.report(7, "lt", 1, float("-inf"), grad=float("nan"))
    assert decision.is_stop
    assert bodies[0]["value_kind"] == "-inf" and "value" not in bodies[0]
    assert bodies[0]["metrics"] == {"grad": "nan"}
    assert value_fields(1.5) == {"value": 1.5}


def test_heartbeat_interval_is_a_third_of_the_lease() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert heartbeat_interval_s(now + timedelta(seconds=3), now) == pytest.approx(1.0)
    assert heartbeat_interval_s(now + timedelta(seconds=600), now) == 10.0
    assert heartbeat_interval_s(now - timedelta(seconds=5), now) == 0.2


def test_current_job_from_agent_environment(tmp_path: os.PathLike[str]) -> None:
    assert job_from_env({}) is None
    env = {
        "TUNER_URL": "http://x:1",
        "TUNER_TOKEN": "t",
        "TUNER_JOB_ID": "7",
        "TUNER_LEASE_TOKEN": "lt",
        "TUNER_PARAMS": '{"lr": 0.5}',
        "TUNER_FROM_RESOURCE": "3",
        "TUNER_TO_RESOURCE": "9",
        "TUNER_CHECKPOINT_DIR": str(tmp_path),
        "TUNER_CHECKPOINT": "/ck/3.pkl",
        "TUNER_EXPERIMENT_ID": "1",
        "TUNER_TRIAL_ID": "4",
        "TUNER_TRIAL_NUMBER": "2",
    }
    job = job_from_env(env)
    assert job is not None
    assert (job.job_id, job.lease_token, job.params) == (7, "lt", {"lr": 0.5})
    assert (job.from_resource, job.to_resource, job.checkpoint) == (3, 9, "/ck/3.pkl")
    assert job.checkpoint_dir == str(tmp_path) and job.trial_number == 2
    assert (job.metric, job.mode) == (None, None)  # an environment that does not say
    # The agent heartbeats, not the script.
    assert not any(t.name == "tuner-heartbeat-7" for t in threading.enumerate())
    job.close()
    told = job_from_env({**env, "TUNER_METRIC": "accuracy", "TUNER_MODE": "max"})
    assert told is not None and (told.metric, told.mode) == ("accuracy", "max")
    told.close()
    with pytest.raises(ConfigError, match="TUNER_MODE is 'up', but must be min or max"):
        job_from_env({**env, "TUNER_METRIC": "accuracy", "TUNER_MODE": "up"})
