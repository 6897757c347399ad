"""API tokens with roles: admin > worker > viewer, stored as their SHA-256, never in clear.

The service checks them (:mod:`api.auth`); the token routes, the ``tuner token`` command and
the server's start store and revoke them through the functions here, so each rule has one
home:

- A revoked token stays revoked; revoking is idempotent.
- The last active admin token cannot be revoked (:class:`LastAdminToken`), so the service
  always has an administrator. Any other token may be revoked, the caller's own included.
- A token given by the deployment (``TUNER_ADMIN_TOKEN``, ``TUNER_WORKER_TOKEN``) is stored
  under that name, which other tokens may not take; when the value changes between server
  starts, the tokens stored from earlier values are revoked (:func:`ensure_token`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tuner.errors import ConfigError, ConflictError, NotFound
from tuner.protocol import hash_token
from tuner.storage import queries
from tuner.storage.models import TokenRow
from tuner.storage.queries import TokenInfo

Role = Literal["admin", "worker", "viewer"]
ROLES: tuple[Role, ...] = ("viewer", "worker", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}

log = logging.getLogger(__name__)

ADMIN_TOKEN_NAME = "TUNER_ADMIN_TOKEN"
WORKER_TOKEN_NAME = "TUNER_WORKER_TOKEN"
#: Names of the tokens the deployment gives; a new value revokes the older ones.
RESERVED_NAMES = frozenset({ADMIN_TOKEN_NAME, WORKER_TOKEN_NAME})


class LastAdminToken(ConflictError):
    """Revoking this token would leave the service with no active admin token."""

    code = "last_admin_token"


def new_token_text() -> str:
    return "tnr_" + secrets.token_urlsafe(32)


def create_token(session: Session, role: str, name: str) -> str:
    """Store a new token with ``role`` and return it in clear (the only time it is shown).

    The caller owns the transaction.

    Raises:
        ConfigError: an unknown role, or a name kept for the deployment's tokens.
    """
    if role not in RANK:
        raise ConfigError(f"role is {role!r}, but must be one of admin, worker, viewer")
    if name in RESERVED_NAMES:
        raise ConfigError(f"name is {name!r}, which is kept for the token set by that variable")
    token = new_token_text()
    queries.create_token(session, name[:200], role, hash_token(token), time.time())
    return token


def lookup_role(session: Session, token: str) -> Role | None:
    """The role of an active token, or None for an unknown or revoked one."""
    info = queries.token_by_hash(session, hash_token(token))
    if info is None or not info.active or info.role not in RANK:
        return None
    return info.role


def list_tokens(session: Session, *, include_revoked: bool = False) -> list[TokenInfo]:
    """Every token (active ones only unless ``include_revoked``), oldest first."""
    return queries.list_tokens(session, include_revoked=include_revoked)


def revoke_token(session: Session, token_id: int, now: float) -> TokenInfo:
    """Revoke token ``token_id`` and return it; a revoked one is returned as it is.

    The caller owns the transaction and, once it commits, drops the token from any cache of
    verified tokens it keeps. On PostgreSQL the active admin tokens are locked before they
    are counted, so two revocations at once cannot remove the last two.

    Raises:
        NotFound: no token has this id.
        LastAdminToken: it is the only active admin token.
    """
    info = _token_by_id(session, token_id)
    if not info.active:
        return info
    if info.role == "admin":
        admins = session.scalars(
            select(TokenRow.id)
            .where(TokenRow.role == "admin", TokenRow.revoked_at.is_(None))
            .with_for_update()
        ).all()
        if list(admins) == [token_id]:
            raise LastAdminToken(
                f"token {token_id} is the last active admin token: create another admin "
                "token first (`tuner token create --role admin`), then revoke this one"
            )
    if queries.revoke_token(session, token_id, now):
        return dataclasses.replace(info, revoked_at=now)
    return _token_by_id(session, token_id)  # revoked at the same moment by another caller


def _token_by_id(session: Session, token_id: int) -> TokenInfo:
    row = session.scalars(
        select(TokenRow).where(TokenRow.id == token_id).execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise NotFound(f"token {token_id} does not exist")
    return TokenInfo(row.id, row.name, row.role, row.token_hash, row.created_at, row.revoked_at)


def ensure_admin(factory: sessionmaker[Session], admin_token: str | None) -> str | None:
    """Make sure the service has an admin token; return one generated now, else None.

    With ``TUNER_ADMIN_TOKEN`` set, store it (see :func:`ensure_token`: a new value revokes
    the token of the previous one). Unset, and no active admin token exists: generate one
    and return it (the caller shows it once). Unset otherwise: nothing changes; unsetting
    the variable revokes nothing.
    """
    if admin_token:
        ensure_token(factory, admin_token, "admin", ADMIN_TOKEN_NAME)
        return None
    with factory.begin() as session:
        exists = session.scalar(
            select(TokenRow.id).where(TokenRow.role == "admin", TokenRow.revoked_at.is_(None))
        )
        if exists is not None:
            return None
        return create_token(session, "admin", "first admin (generated)")


def ensure_token(factory: sessionmaker[Session], token: str, role: Role, name: str) -> bool:
    """Store a token given by the deployment under ``name``, and revoke the active tokens
    stored under that name from earlier values: changing the variable retires the old token.

    A value that was revoked (through the API) stays revoked, with a warning in the log: a
    restart does not bring it back. Every replica must be given the same value.

    Returns:
        Whether the token is active.

    Raises:
        ConflictError: another process stored the same value at the same moment.
    """
    token_hash = hash_token(token)
    with factory.begin() as session:
        found = queries.token_by_hash(session, token_hash)
        if found is None:
            queries.create_token(session, name, role, token_hash, time.time())
        elif not found.active:
            log.warning(
                "event=deployment_token_revoked name=%s note=%s", name,
                "this value was revoked and stays revoked: set a new one",
            )
            return False
        stale = session.scalars(
            select(TokenRow.id).where(
                TokenRow.name == name, TokenRow.role == role,
                TokenRow.revoked_at.is_(None), TokenRow.token_hash != token_hash,
            )
        ).all()
        for token_id in stale:
            queries.revoke_token(session, token_id, time.time())
        return True
