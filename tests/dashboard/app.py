"""The app the browser tests serve: ``create_app`` with the dashboard mounted (until
``api.main`` mounts it itself). Run: ``uvicorn tests.dashboard.app:create --factory``."""

from __future__ import annotations

from fastapi import FastAPI

from api.dashboard import router
from api.main import create_app


def with_dashboard(app: FastAPI) -> FastAPI:
    """Mount the dashboard router unless ``create_app`` already did."""
    if not any(getattr(route, "path", None) == "/ui" for route in app.routes):
        app.include_router(router)
    return app


def create() -> FastAPI:
    return with_dashboard(create_app())
