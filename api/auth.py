"""API tokens with roles: admin > worker > viewer. Stored as their SHA-256, never in clear.

Viewers read (GET). Workers also claim, report, heartbeat, complete, fail, register workers
and post output. Admins do everything, including creating experiments and tokens and the
experiment actions. No token or an unknown or revoked one is 401; a role too low is 403.
Admins list and revoke tokens (``api.routes.tokens``); revocation reaches other replicas
within :data:`CACHE_TTL_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from tuner.coordinator import hash_token
from tuner.errors import AuthError, Forbidden
from tuner.storage.database import read_once_more_if_dead
from tuner.tokens import RANK, Role, lookup_role

log = logging.getLogger(__name__)

#: How long a verified token is trusted before it is looked up again. A token revoked on
#: one replica is refused there at once, and by the others within this many seconds.
CACHE_TTL_S = 10.0

bearer = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer <token>")


class Authenticator:
    """Checks bearer tokens against the tokens table, with a short in-process cache.

    ``ttl_s``: how long a verified token is trusted (:data:`CACHE_TTL_S`); ``clock``: a
    monotonic clock in seconds (tests pass their own, so that no test sleeps).
    """

    def __init__(
        self, factory: sessionmaker[Session], *, ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._ttl_s, self._clock = ttl_s, clock
        self._cache: dict[str, tuple[Role, float]] = {}
        self._lock = threading.Lock()
        # Bumped by forget(): a lookup that began before a revocation may have read the
        # token as active, and must not put it back in the cache.
        self._generation = 0

    def cached_role(self, token: str) -> Role | None:
        """The role of a token verified in the last ``ttl_s``; None: look it up."""
        return self._cached(hash_token(token))

    def _cached(self, key: str) -> Role | None:
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        return None

    def role_of(self, token: str) -> Role | None:
        """The role of an active token (cached, else one read); None when unknown or revoked."""
        key = hash_token(token)
        role = self._cached(key)
        if role is not None:
            return role
        generation = self._generation
        # Once more on a fresh connection if the pooled one died (a terminated backend).
        role = read_once_more_if_dead(self._factory, lambda session: lookup_role(session, token))
        if role is not None:
            with self._lock:
                if generation != self._generation:
                    return role  # a revocation ran meanwhile: answer, but do not cache
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (role, self._clock() + self._ttl_s)
        return role

    def forget(self, token_hash: str) -> None:
        """Stop trusting a token this process verified (call it once its revocation has
        committed): its next request is looked up, and refused."""
        with self._lock:
            self._generation += 1
            self._cache.pop(token_hash, None)


async def get_authenticator(request: Request) -> Authenticator:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]


def _admit(role: Role | None, minimum: Role) -> Role:
    if role is None:
        raise AuthError("unknown or revoked token")
    if RANK[role] < RANK[minimum]:
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
