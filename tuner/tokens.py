"""API tokens with roles: admin > worker > viewer, stored as their SHA-256, never in clear.

The service checks them (:mod:`api.auth`); the ``tuner token`` command and the server's
start store them through the functions here.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuner.errors import ConfigError
from tuner.protocol import hash_token
from tuner.storage import queries
from tuner.storage.models import TokenRow

Role = Literal["admin", "worker", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "worker", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}


def new_token_text() -> str:
    return "tnr_" + secrets.token_urlsafe(32)


def create_token(session: Session, role: str, name: str) -> str:
    """Store a new token with ``role`` and return it in clear (the only time it is shown).

    The caller owns the transaction (``tuner token create --role R`` opens one).
    """
    if role not in RANK:
        raise ConfigError(f"role is {role!r}, but must be one of admin, worker, viewer")
    token = new_token_text()
    queries.create_token(session, name[:200], role, hash_token(token), time.time())
    return token


def lookup_role(session: Session, token: str) -> Role | None:
    """The role of an active token, or None for an unknown or revoked one."""
    info = queries.token_by_hash(session, hash_token(token))
    if info is None or not info.active or info.role not in RANK:
        return None
    return info.role


def ensure_admin(factory: sessionmaker[Session], admin_token: str | None) -> str | None:
    """Store ``TUNER_ADMIN_TOKEN`` as an admin token, or, when it is unset and no admin token
    exists, generate one and return it (the caller shows it once); None otherwise."""
    with factory.begin() as session:
        if admin_token:
            if queries.token_by_hash(session, hash_token(admin_token)) is None:
                queries.create_token(
                    session, "TUNER_ADMIN_TOKEN", "admin", hash_token(admin_token), time.time()
                )
            return None
        exists = session.scalar(
            select(TokenRow.id).where(TokenRow.role == "admin", TokenRow.revoked_at.is_(None))
        )
        if exists is not None:
            return None
        return create_token(session, "admin", "first admin (generated)")


def ensure_token(factory: sessionmaker[Session], token: str, role: Role, name: str) -> None:
    """Store a token given by the deployment (e.g. ``TUNER_WORKER_TOKEN``) if it is new."""
    with factory.begin() as session:
        if queries.token_by_hash(session, hash_token(token)) is None:
            queries.create_token(session, name, role, hash_token(token), time.time())
