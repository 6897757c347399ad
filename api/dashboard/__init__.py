"""The web dashboard: HTML pages at ``/ui``, static files at ``/ui/static`` and a few JSON
reads at ``/ui/api``. Mount it with ``app.include_router(dashboard.router)``."""

from api.dashboard.routes import router

__all__ = ["router"]
