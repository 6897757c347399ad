"""Property-based requests generated from /openapi.json: no operation answers 5xx."""

from __future__ import annotations

import types
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.api.conftest import Api, bearer
from tuner.tokens import ADMIN_TOKEN_NAME


class _CompatMany:
    """The ``more()``/``reject()`` form of Hypothesis's ``many`` that hypothesis-jsonschema
    0.23 calls; Hypothesis 6.150+ changed ``many`` to a context manager, which breaks every
    object schema. Test-only shim until hypothesis-jsonschema catches up (no span tracking,
    so shrinking of generated objects is coarser)."""

    def __init__(
        self, data: Any, min_size: int, max_size: float, average_size: float
    ) -> None:
        from hypothesis.internal.conjecture.utils import _calc_p_continue

        self.data, self.min_size, self.max_size = data, min_size, max_size
        self.p_continue = _calc_p_continue(average_size - min_size, max_size - min_size)
        self.count = self.rejections = 0
        self.force_stop = False

    def more(self) -> bool:
        if self.count < self.min_size:
            go = True
        elif self.force_stop or self.count >= self.max_size:
            go = False
        else:
            go = bool(self.data.draw_boolean(self.p_continue))
        if go:
            self.count += 1
        return go

    def reject(self) -> None:
        self.count -= 1
        self.rejections += 1
        if self.rejections > max(3, 2 * self.count):
            self.force_stop = True


def _patch_hypothesis_jsonschema() -> None:
    from hypothesis_jsonschema import _from_schema

    if not hasattr(_from_schema.cu.many, "more"):
        _from_schema.cu = types.SimpleNamespace(
            **{k: getattr(_from_schema.cu, k) for k in dir(_from_schema.cu)
               if not k.startswith("__")},
        )
        _from_schema.cu.many = _CompatMany


_patch_hypothesis_jsonschema()


@pytest.fixture
def api_schema(shared_api: Api) -> schemathesis.BaseSchema:
    return schemathesis.from_asgi("/openapi.json", shared_api.client.app, force_schema_version="30")


schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=20, deadline=None, derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case, shared_api: Api) -> None:
    if isinstance(case.body, dict) and "wait_s" in case.body:
        case.body["wait_s"] = 0  # a long poll would only make the run slow
    if case.path_parameters and case.path_parameters.get("token_id") in _own_token_ids(shared_api):
        case.path_parameters["token_id"] = 10**6  # revoking the run's own tokens ends the run
    response = case.call_asgi(headers=bearer(shared_api.tokens["admin"]))
    case.validate_response(response, checks=(not_a_server_error,))
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "detail"}, body


def _own_token_ids(api: Api) -> set[int]:
    """The ids of the tokens this module's requests carry (shared_api's, by their names)."""
    own = {ADMIN_TOKEN_NAME, "test worker", "test viewer"}
    listed = api.client.get("/api/v1/tokens", headers=bearer(api.tokens["admin"])).json()
    return {item["id"] for item in listed["items"] if item["name"] in own}
