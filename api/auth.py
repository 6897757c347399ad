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
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Depends, Request
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

    def role_of(self, token: str) -> Role | None:
        key = hash_token(token)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        with self._factory.begin() as session:
            role = lookup_role(session, token)
        if role is not None:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (role, now + CACHE_TTL_S)
        return role


def require(minimum: Role) -> Callable[..., Role]:
    """A dependency that admits tokens whose role is ``minimum`` or higher."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Role:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        authenticator: Authenticator = request.app.state.authenticator
        role = authenticator.role_of(credentials.credentials)
        if role is None:
            raise AuthError("unknown or revoked token")
        if _RANK[role] < _RANK[minimum]:
            raise Forbidden(f"this needs the {minimum} role; the token has the {role} role")
        return role

    check.__name__ = f"require_{minimum}"
    return check


Viewer = Depends(require("viewer"))
Worker = Depends(require("worker"))
Admin = Depends(require("admin"))
