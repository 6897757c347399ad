"""The one place where errors become HTTP answers: every body is ``{"error", "detail"}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuner.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    Forbidden,
    NotFound,
    OutOfRange,
    StorageError,
    TunerError,
)

log = logging.getLogger(__name__)

#: Most specific first.
STATUS: tuple[tuple[type[TunerError], int], ...] = (
    (Forbidden, 403),
    (AuthError, 401),
    (NotFound, 404),
    (ConflictError, 409),
    (ConfigError, 422),
    (OutOfRange, 422),
    (StorageError, 503),
)

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_request", 429: "too_many_requests", 503: "unavailable",
}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def status_of(exc: TunerError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def describe_validation(errors: Sequence[Any]) -> str:
    """``body.step: Input should be a valid integer; body.value: ...`` (at most 5 errors)."""
    parts = []
    for err in list(errors)[:5]:
        path = ".".join(str(p) for p in err.get("loc", ())) or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            msg = f"not valid JSON ({ctx.get('error', 'parse error')})"
        parts.append(f"{path}: {msg}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts)


async def _tuner_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, TunerError):  # pragma: no cover - registered for TunerError
        raise exc
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.warning("event=storage_error path=%s detail=%r", request.url.path, exc.detail)
    return error_response(status, exc.code, exc.detail, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return error_response(422, "invalid_request", describe_validation(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    if exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, detail, dict(exc.headers or {}) or None)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, IntegrityError):
        # A uniqueness rule that the coordinator did not see coming (a concurrent writer).
        return error_response(409, "conflict", "the request conflicts with stored state")
    if isinstance(exc, DataError):
        # A value the database cannot hold (out of a column's range, say): sending it again
        # cannot succeed, so it is not a "retry later". The API's own limits should catch
        # such values first (docs/LIMITS.md); this is the net under them.
        log.warning("event=data_error path=%s detail=%r", request.url.path, str(exc.orig)[:300])
        return error_response(
            422, "invalid_request",
            "the database cannot store a value of this request (out of range, or a character "
            "it does not allow); see docs/LIMITS.md",
        )
    log.warning(
        "event=database_error path=%s error=%s", request.url.path, type(exc).__name__
    )
    detail = "the database is unavailable or refused the request; retry later"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        detail = "the database connection was lost; retry later"
    return error_response(503, "storage_error", detail, {"Retry-After": "1"})


async def _unexpected_error(request: Request, _exc: Exception) -> JSONResponse:
    log.exception("event=unexpected_error method=%s path=%s", request.method, request.url.path)
    return error_response(500, "internal_error", "the server hit an unexpected error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TunerError, _tuner_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
