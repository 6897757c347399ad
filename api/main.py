"""The FastAPI application: ``create_app(settings)`` builds everything; nothing at import.

Run it with ``uvicorn api.main:create_app --factory --no-access-log`` (settings from
``TUNER_*`` variables) or ``python -m api.main``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import dashboard
from api.auth import Authenticator
from api.deps import Runtime
from api.errors import install_error_handlers
from api.metrics import ASGIApp, LatencyMiddleware, Message, Metrics, Receive, Scope, Send
from api.periodic import Periodic
from api.reaper import reap_backlog
from api.routes import experiments, export, health, jobs, tokens, trials, workers
from api.settings import Settings
from api.upkeep import upkeep_once
from api.writer import Writer
from tuner.errors import ConflictError
from tuner.storage.database import make_engine, make_session_factory, upgrade
from tuner.tokens import WORKER_TOKEN_NAME, ensure_admin, ensure_token

API_PREFIX = "/api/v1"

log = logging.getLogger(__name__)


class _TooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTPException so that FastAPI's body parsing
    lets it through (it turns other exceptions into 400)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: by Content-Length, and while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    break  # malformed: the server refuses it; count while streaming anyway
                if too_large:
                    await self._refuse(send)
                    return
                # HTTP framing stops the body at Content-Length: nothing to count (and no
                # wrapper on every message of the request and its answer).
                await self.app(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"error": "payload_too_large",
             "detail": f"the request body is larger than {self.max_bytes} bytes"}
        ).encode()
        await send({
            "type": "http.response.start", "status": 413,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})


def configure_logging(level: str) -> None:
    """key=value lines on stderr for the ``api`` and ``tuner`` loggers (quiet by default)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    for name in ("api", "tuner"):
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        if not any(getattr(h, "_tuner", False) for h in logger.handlers):
            handler._tuner = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], float] | None = None
) -> FastAPI:
    """Build the app: upgrade the schema, make the engine and sessions, make sure an admin
    token exists (storing ``TUNER_ADMIN_TOKEN``; a new value revokes the previous value's
    token: :func:`tuner.tokens.ensure_token`), register routes, error handlers and
    middleware. The reaper thread starts with the app's lifespan and stops with it."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    engine_args: dict[str, Any] = {"pool_size": settings.db_pool_size, "max_overflow": 20}
    engine = make_engine(settings.database_url, **engine_args)
    clock = clock or time.time
    metrics = Metrics()
    writer = Writer(
        engine, make_session_factory(engine), metrics, concurrency=settings.write_concurrency
    )
    runtime = Runtime(
        settings=settings, engine=engine, writer=writer,
        read_factory=make_session_factory(engine, read_only=True), clock=clock, metrics=metrics,
    )
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    # A ConflictError: another replica stored the same token at the same moment.
    with contextlib.suppress(ConflictError):
        generated = ensure_admin(writer.session_factory, admin)
        if generated is not None:
            log.warning(
                "event=admin_token_created token=%s note=%s", generated,
                "shown once: store it now (set TUNER_ADMIN_TOKEN to choose one)",
            )
    if settings.worker_token:
        worker = settings.worker_token.get_secret_value()
        with contextlib.suppress(ConflictError):
            ensure_token(writer.session_factory, worker, "worker", WORKER_TOKEN_NAME)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Long-polling claims hold a worker thread each: make room for many.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        await writer.start_async()
        background = [
            Periodic("reaper", settings.reaper_interval_s, partial(reap_backlog, runtime))
        ]
        if runtime.is_postgres:  # table upkeep is for PostgreSQL (api.upkeep)
            upkeep = partial(upkeep_once, engine)
            background.append(Periodic("table_upkeep", settings.upkeep_interval_s, upkeep))
        for work in background:
            work.start()
        try:
            yield
        finally:
            for work in background:
                work.stop()
            engine.dispose()
            await writer.stop_async()

    app = FastAPI(
        title="tuner", version="0.1.0", lifespan=lifespan,
        description="Hyperparameter tuning as a service: the job protocol, experiments, "
        "trials, workers. Every error body is {\"error\": code, \"detail\": sentence}.",
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = writer.session_factory
    app.state.clock = runtime.clock
    app.state.authenticator = Authenticator(runtime.read_factory)
    install_error_handlers(app)
    for module in (experiments, export, trials, jobs, workers, tokens):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.add_middleware(LatencyMiddleware, metrics=runtime.metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app


def main() -> None:
    """``python -m api.main``: serve with uvicorn on ``TUNER_HOST:TUNER_PORT``."""
    import uvicorn

    settings = Settings()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        access_log=settings.access_log, log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
