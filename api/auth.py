"""API tokens with roles: admin > worker > viewer. Stored as their SHA-256, never in clear.

Viewers read (GET). Workers also claim, report, heartbeat, complete, fail, register workers
and post output. Admins do everything, including creating experiments and tokens and the
experiment actions. No token or an unknown one is 401; a role too low is 403.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuner.coordinator import hash_token
from tuner.errors import AuthError, ConfigError, Forbidden
from tuner.storage import queries
from tuner.storage.models import TokenRow

log = logging.getLogger(__name__)

Role = Literal["admin", "worker", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "worker", "admin")
_RANK = {role: i for i, role in enumerate(ROLES)}

#: How long a verified token is trusted before it is looked up again.
CACHE_TTL_S = 10.0

bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer <token>")


def new_token_text() -> str:
    return "tnr_" + secrets.token_urlsafe(32)


def create_token(session: Session, role: str, name: str) -> str:
    """Store a new token with ``role`` and return it in clear (the only time it is shown).

    The caller owns the transaction (``tuner token create --role R`` opens one).
    """
    if role not in _RANK:
        raise ConfigError(f"role is {role!r}, but must be one of admin, worker, viewer")
    token = new_token_text()
    queries.create_token(session, name[:200], role, hash_token(token), time.time())
    return token


def lookup_role(session: Session, token: str) -> Role | None:
    """The role of an active token, or None for an unknown or revoked one."""
    info = queries.token_by_hash(session, hash_token(token))
    if info is None or not info.active or info.role not in _RANK:
        return None
    return info.role


def ensure_admin(factory: sessionmaker[Session], admin_token: str | None) -> None:
    """Store ``TUNER_ADMIN_TOKEN`` as an admin token, or, when it is unset and no admin token
    exists, generate one and log it once (WARNING) so that the operator can copy it."""
    with factory.begin() as session:
        if admin_token:
            if queries.token_by_hash(session, hash_token(admin_token)) is None:
                queries.create_token(
                    session, "TUNER_ADMIN_TOKEN", "admin", hash_token(admin_token), time.time()
                )
            return
        exists = session.scalar(
            select(TokenRow.id).where(TokenRow.role == "admin", TokenRow.revoked_at.is_(None))
        )
        if exists is not None:
            return
        token = create_token(session, "admin", "first admin (generated)")
    log.warning(
        "event=admin_token_created token=%s note=%s", token,
        "shown once: store it now (set TUNER_ADMIN_TOKEN to choose one)",
    )


def ensure_token(factory: sessionmaker[Session], token: str, role: Role, name: str) -> None:
    """Store a token given by the deployment (e.g. ``TUNER_WORKER_TOKEN``) if it is new."""
    with factory.begin() as session:
        if queries.token_by_hash(session, hash_token(token)) is None:
            queries.create_token(session, name, role, hash_token(token), time.time())


class Authenticator:
    """Checks bearer tokens against the tokens table, with a short in-process cache."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._cache: dict[str, tuple[Role, float]] = {}
        self._lock = threading.Lock()

    def cached_role(self, token: str) -> Role | None:
        """The role of a token verified in the last ``CACHE_TTL_S``; None: look it up."""
        return self._cached(hash_token(token))

    def _cached(self, key: str) -> Role | None:
        cached = self._cache.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def role_of(self, token: str) -> Role | None:
        """The role of an active token (cached, else one read); None when unknown or revoked."""
        key = hash_token(token)
        role = self._cached(key)
        if role is not None:
            return role
        with self._factory.begin() as session:
            role = lookup_role(session, token)
        if role is not None:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (role, time.monotonic() + CACHE_TTL_S)
        return role


def _admit(role: Role | None, minimum: Role) -> Role:
    if role is None:
        raise AuthError("unknown or revoked token")
    if _RANK[role] < _RANK[minimum]:
        raise Forbidden(f"this needs the {minimum} role; the token has the {role} role")
    return role


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
    return credentials.credentials


def authorize(
    authenticator: Authenticator, credentials: HTTPAuthorizationCredentials | None,
    minimum: Role,
) -> Role:
    """The role of ``credentials`` if it is ``minimum`` or higher; 401 or 403 otherwise."""
    return _admit(authenticator.role_of(_token(credentials)), minimum)


def require(minimum: Role) -> Callable[..., Awaitable[Role]]:
    """A dependency that admits tokens whose role is ``minimum`` or higher.

    Async: a token seen in the last few seconds is admitted on the event loop, with no
    worker-thread hand-off; only a lookup in the database goes to a thread."""

    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Role:
        token = _token(credentials)
        authenticator: Authenticator = request.app.state.authenticator
        role = authenticator.cached_role(token)
        if role is None:
            role = await run_in_threadpool(authenticator.role_of, token)
        return _admit(role, minimum)

    check.__name__ = f"require_{minimum}"
    return check


Viewer = Depends(require("viewer"))
Worker = Depends(require("worker"))
Admin = Depends(require("admin"))
