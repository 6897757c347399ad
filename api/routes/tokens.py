"""API tokens: create, list, revoke (admin only). Neither a token's text (shown once, when it
is created) nor its hash ever leaves the server again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.auth import Admin, AuthenticatorDep
from api.deps import Id, RuntimeDep
from api.shapes import iso, iso_or_none
from tuner import tokens
from tuner.coordinator import hash_token
from tuner.errors import NotFound
from tuner.storage import queries
from tuner.storage.queries import TokenInfo
from tuner.storage.sql import SqlStore
from tuner.wire import ErrorOut, TokenIn, TokenInfoOut, TokenListOut, TokenOut

router = APIRouter(
    tags=["tokens"],
    dependencies=[Admin],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
REVOKE_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no token has this id"},
    409: {"model": ErrorOut, "description": "it is the last active admin token"},
}


def token_info_out(info: TokenInfo) -> TokenInfoOut:
    return TokenInfoOut(
        id=info.id, name=info.name, role=info.role,
        created_at=iso(info.created_at), revoked_at=iso_or_none(info.revoked_at),
        active=info.active,
    )


@router.post("/tokens", status_code=201, response_model=TokenOut)
def new_token(body: TokenIn, runtime: RuntimeDep) -> TokenOut:
    """Create an API token with a role; the token is shown only in this answer."""

    def run(store: SqlStore) -> TokenOut:
        token = tokens.create_token(store.session, body.role, body.name)
        info = queries.token_by_hash(store.session, hash_token(token))
        if info is None:  # pragma: no cover - just inserted in this transaction
            raise NotFound("the new token vanished")
        return TokenOut(id=info.id, name=info.name, role=body.role, token=token)

    return runtime.writer.write("create_token", run)


@router.get("/tokens", response_model=TokenListOut)
def list_tokens(runtime: RuntimeDep, include_revoked: bool = False) -> TokenListOut:
    """API tokens, oldest first: active ones, or every one with ``include_revoked``."""
    found = runtime.read(
        "list_tokens", lambda s: tokens.list_tokens(s, include_revoked=include_revoked)
    )
    return TokenListOut(items=[token_info_out(info) for info in found])


@router.post("/tokens/{token_id}/revoke", response_model=TokenInfoOut, responses=REVOKE_ANSWERS)
def revoke_token(
    token_id: Id, runtime: RuntimeDep, authenticator: AuthenticatorDep
) -> TokenInfoOut:
    """Revoke a token; revoking a revoked one answers the same (idempotent).

    This server refuses the token from the next request on; other replicas within the
    10 s they trust a verified token (``api.auth.CACHE_TTL_S``). The token making the
    request may revoke itself. The last active admin token cannot be revoked (409): create
    another admin token first.
    """
    info = runtime.writer.write(
        "revoke_token", lambda store: tokens.revoke_token(store.session, token_id, runtime.now())
    )
    authenticator.forget(info.token_hash)  # after the commit: a lookup now sees it revoked
    return token_info_out(info)
