"""The token routes (list, revoke, create), revocation across replicas, and the deployment's
tokens (TUNER_ADMIN_TOKEN, TUNER_WORKER_TOKEN) changing between server starts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.auth import CACHE_TTL_S, Authenticator
from api.main import create_app
from api.routes import tokens as token_routes
from api.settings import Settings
from tests.api.conftest import ADMIN_TOKEN, Api, bearer
from tests.conftest import DB_PARAMS
from tuner.client import Client
from tuner.protocol import hash_token
from tuner.storage.database import make_engine, make_session_factory
from tuner.tokens import revoke_token

TOKENS = "/api/v1/tokens"


def _ids(api: Api) -> dict[str, int]:
    """Token id by name (active and revoked)."""
    answer = api.client.get(TOKENS, params={"include_revoked": True}, headers=api.as_("admin"))
    assert answer.status_code == 200, answer.text
    return {item["name"]: item["id"] for item in answer.json()["items"]}


def _revoke(api: Api, token_id: int, token: str | None = None) -> Any:
    headers = bearer(token) if token else api.as_("admin")
    return api.client.post(f"{TOKENS}/{token_id}/revoke", headers=headers)


def _new_admin(api: Api, name: str = "second admin") -> dict[str, Any]:
    answer = api.client.post(
        TOKENS, json={"role": "admin", "name": name}, headers=api.as_("admin")
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


# ---- the routes ------------------------------------------------------------------------------
def test_tokens_list_shows_records_never_secrets(api: Api) -> None:
    answer = api.client.get(TOKENS, headers=api.as_("admin"))

    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(i["name"], i["role"], i["active"]) for i in items] == [
        ("TUNER_ADMIN_TOKEN", "admin", True),
        ("test worker", "worker", True),
        ("test viewer", "viewer", True),
    ]
    assert set(items[0]) == {"id", "name", "role", "created_at", "revoked_at", "active"}
    for secret in (*api.tokens.values(), *map(hash_token, api.tokens.values())):
        assert secret not in answer.text


def test_tokens_revoke_refuses_the_token_at_once_and_is_idempotent(api: Api) -> None:
    worker_id = _ids(api)["test worker"]
    assert api.get("/experiments", role="worker").status_code == 200  # verified and cached

    first = _revoke(api, worker_id)

    assert first.status_code == 200, first.text
    assert first.json()["active"] is False and first.json()["revoked_at"] is not None
    refused = api.get("/experiments", role="worker")
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    again = _revoke(api, worker_id)
    assert again.status_code == 200 and again.json() == first.json()
    active = api.client.get(TOKENS, headers=api.as_("admin")).json()["items"]
    assert worker_id not in [i["id"] for i in active]
    everything = api.client.get(TOKENS, params={"include_revoked": True}, headers=api.as_("admin"))
    assert {"id": worker_id, "active": False}.items() <= next(
        i for i in everything.json()["items"] if i["id"] == worker_id
    ).items()


def test_tokens_revoke_unknown_id_is_404(api: Api) -> None:
    answer = _revoke(api, 99_999)

    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "detail": "token 99999 does not exist"}


@pytest.mark.parametrize("role", ["viewer", "worker"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", TOKENS, None),
        ("POST", f"{TOKENS}/1/revoke", None),
        ("POST", TOKENS, {"role": "viewer", "name": "x"}),
    ],
    ids=["list", "revoke", "create"],
)
def test_tokens_routes_are_admin_only(
    shared_api: Api, role: str, method: str, path: str, body: Any
) -> None:
    answer = shared_api.client.request(method, path, json=body, headers=shared_api.as_(role))

    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"
    assert shared_api.client.request(method, path, json=body).status_code == 401


def test_tokens_last_admin_cannot_be_revoked_but_a_token_may_revoke_itself(api: Api) -> None:
    first_id = _ids(api)["TUNER_ADMIN_TOKEN"]
    refused = _revoke(api, first_id)
    assert refused.status_code == 409
    assert refused.json()["error"] == "last_admin_token"
    assert "create another admin token first" in refused.json()["detail"]

    second = _new_admin(api)
    itself = _revoke(api, first_id, token=ADMIN_TOKEN)  # the request's own token

    assert itself.status_code == 200 and itself.json()["active"] is False
    assert api.get("/experiments", role="admin").status_code == 401
    last = _revoke(api, second["id"], token=second["token"])
    assert last.status_code == 409 and last.json()["error"] == "last_admin_token"
    assert api.client.get(TOKENS, headers=bearer(second["token"])).status_code == 200


def test_tokens_names_of_the_deployments_tokens_are_kept(api: Api) -> None:
    for name in ("TUNER_ADMIN_TOKEN", "TUNER_WORKER_TOKEN"):
        answer = api.client.post(
            TOKENS, json={"role": "admin", "name": name}, headers=api.as_("admin")
        )
        assert answer.status_code == 422 and name in answer.json()["detail"]


def test_tokens_revoke_states_the_cache_lifetime() -> None:
    """The lifetime stated to users is the one the cache uses."""
    stated = f"{CACHE_TTL_S:g} s"
    assert stated in (token_routes.revoke_token.__doc__ or "")
    assert stated in (Client.revoke_token.__doc__ or "")
    from tuner.cli.tokens import token_revoke

    assert stated in (token_revoke.__doc__ or "")


# ---- revocation across replicas --------------------------------------------------------------
class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_revoked_on_one_replica_are_refused_by_another_when_its_cache_expires(
    settings: Settings,
) -> None:
    """Two apps on one database stand for two replicas (or server processes)."""
    clock = FakeMonotonic()
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        two.app.state.authenticator = Authenticator(  # type: ignore[attr-defined]
            two.app.state.runtime.read_factory, ttl_s=5.0, clock=clock,  # type: ignore[attr-defined]
        )
        made = one.post(TOKENS, json={"role": "viewer", "name": "v"}, headers=bearer(ADMIN_TOKEN))
        viewer = bearer(made.json()["token"])
        assert one.get("/api/v1/experiments", headers=viewer).status_code == 200
        assert two.get("/api/v1/experiments", headers=viewer).status_code == 200  # cached

        revoked = one.post(f"{TOKENS}/{made.json()['id']}/revoke", headers=bearer(ADMIN_TOKEN))

        assert revoked.status_code == 200
        assert one.get("/api/v1/experiments", headers=viewer).status_code == 401  # at once
        clock.now += 4.9
        assert two.get("/api/v1/experiments", headers=viewer).status_code == 200  # still cached
        clock.now += 0.2
        assert two.get("/api/v1/experiments", headers=viewer).status_code == 401  # expired


class HookedFactory:
    """A session factory that runs ``hook`` when a lookup opens its transaction."""

    def __init__(self, factory: Any, hook: Any) -> None:
        self.factory, self.hook = factory, hook

    @contextmanager
    def begin(self) -> Iterator[Session]:
        self.hook()
        with self.factory.begin() as session:
            yield session


def test_authenticator_does_not_cache_a_lookup_that_raced_a_revocation(db_url: str) -> None:
    create_app(Settings(database_url=db_url, admin_token=ADMIN_TOKEN, reaper_interval_s=0))
    engine = make_engine(db_url)
    try:
        factory = make_session_factory(engine)
        authenticator: Authenticator
        # The lookup starts, then the token is forgotten (its revocation committed after
        # the lookup's read): the answer stands, but it is not cached.
        hooked = HookedFactory(factory, lambda: authenticator.forget(hash_token(ADMIN_TOKEN)))
        authenticator = Authenticator(hooked)  # type: ignore[arg-type]
        assert authenticator.role_of(ADMIN_TOKEN) == "admin"
        assert authenticator.cached_role(ADMIN_TOKEN) is None
        plain = Authenticator(factory)
        assert plain.role_of(ADMIN_TOKEN) == "admin"
        assert plain.cached_role(ADMIN_TOKEN) == "admin"
        plain.forget(hash_token(ADMIN_TOKEN))
        assert plain.cached_role(ADMIN_TOKEN) is None
    finally:
        engine.dispose()


# ---- the deployment's tokens between server starts ------------------------------------------
def _status(settings: Settings, token: str) -> int:
    with TestClient(create_app(settings)) as client:
        return client.get("/api/v1/experiments", headers=bearer(token)).status_code


@contextmanager
def _tuner_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    logger = logging.getLogger("tuner")  # does not propagate (api.main.configure_logging)
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


def _settings(db_url: str, **tokens: str | None) -> Settings:
    return Settings(database_url=db_url, reaper_interval_s=0, **tokens)  # type: ignore[arg-type]


def test_admin_token_changed_between_starts_revokes_the_old_one(db_url: str) -> None:
    with TestClient(create_app(_settings(db_url, admin_token="admin-old"))) as client:
        made = client.post(TOKENS, json={"role": "admin", "name": "ops"},
                           headers=bearer("admin-old"))
        ops = made.json()["token"]

    new = _settings(db_url, admin_token="admin-new")
    assert _status(new, "admin-new") == 200
    assert _status(new, "admin-old") == 401
    assert _status(new, ops) == 200  # a token made through the API is not the variable's


def test_admin_token_unset_or_unchanged_revokes_nothing(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert _status(_settings(db_url, admin_token="admin-a"), "admin-a") == 200
    logger = logging.getLogger("api")
    logger.addHandler(caplog.handler)
    try:
        assert _status(_settings(db_url), "admin-a") == 200  # unset: no rotation
        assert _status(_settings(db_url, admin_token="admin-a"), "admin-a") == 200
    finally:
        logger.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if "admin_token_created" in r.getMessage()]


def test_admin_token_revoked_through_the_api_stays_revoked_after_a_restart(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(db_url, admin_token="admin-a")
    with TestClient(create_app(settings)) as client:
        other = client.post(TOKENS, json={"role": "admin", "name": "b"}, headers=bearer("admin-a"))
        b = other.json()["token"]
        ids = {i["name"]: i["id"] for i in client.get(TOKENS, headers=bearer(b)).json()["items"]}
        revoked = client.post(f"{TOKENS}/{ids['TUNER_ADMIN_TOKEN']}/revoke", headers=bearer(b))
        assert revoked.status_code == 200

    with _tuner_log(caplog):
        assert _status(settings, "admin-a") == 401

    assert _status(settings, b) == 200
    warned = [r.getMessage() for r in caplog.records]
    assert any("deployment_token_revoked" in m and "TUNER_ADMIN_TOKEN" in m for m in warned)


def test_worker_token_changed_between_starts_revokes_the_old_one(db_url: str) -> None:
    old = _settings(db_url, admin_token="a", worker_token="worker-old")
    assert _status(old, "worker-old") == 200

    new = _settings(db_url, admin_token="a", worker_token="worker-new")
    assert _status(new, "worker-new") == 200
    assert _status(new, "worker-old") == 401


def test_revoke_token_library_rules(session_factory: Any) -> None:
    """The rules the route and ``tuner token revoke --database`` share, on each database."""
    from tuner.errors import NotFound
    from tuner.tokens import LastAdminToken, create_token, ensure_admin, list_tokens

    ensure_admin(session_factory, "admin-x")
    with session_factory.begin() as session:
        create_token(session, "viewer", "v")
        admin, viewer = list_tokens(session)
        with pytest.raises(NotFound):
            revoke_token(session, 12345, 1.0)
        with pytest.raises(LastAdminToken):
            revoke_token(session, admin.id, 1.0)
        assert revoke_token(session, viewer.id, 2.0).revoked_at == 2.0
        assert revoke_token(session, viewer.id, 3.0).revoked_at == 2.0
        assert [t.name for t in list_tokens(session)] == ["TUNER_ADMIN_TOKEN"]


@pytest.mark.parametrize("db_url", [DB_PARAMS[1]], indirect=True)  # SQLite: one writer
def test_revoke_token_two_admins_revoked_at_once_leave_one(session_factory: Any) -> None:
    """The second revocation waits for the first's lock, then sees one admin left."""
    from tuner.tokens import LastAdminToken, create_token, ensure_admin, list_tokens

    ensure_admin(session_factory, "admin-x")
    with session_factory.begin() as session:
        create_token(session, "admin", "second")
        first, second = list_tokens(session)
    outcome: list[BaseException | None] = []

    def revoke_second() -> None:
        try:
            with session_factory.begin() as other:
                revoke_token(other, second.id, 2.0)
            outcome.append(None)
        except LastAdminToken as exc:
            outcome.append(exc)

    with session_factory.begin() as session:
        revoke_token(session, first.id, 1.0)  # holds the admins' row locks until commit
        thread = threading.Thread(target=revoke_second)
        thread.start()
        _wait_for_a_lock_wait(session_factory)
    thread.join(30)

    assert len(outcome) == 1 and isinstance(outcome[0], LastAdminToken)
    with session_factory.begin() as session:
        assert [t.name for t in list_tokens(session)] == ["second"]


def _wait_for_a_lock_wait(session_factory: Any, timeout_s: float = 30.0) -> None:
    """Until another session of this database waits for a row lock (polls, then fails)."""
    deadline = time.monotonic() + timeout_s
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with session_factory.begin() as probe:
            if probe.scalar(query):
                return
        time.sleep(0.01)
    raise AssertionError("the second revocation never waited for the first's lock")
