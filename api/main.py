"""The FastAPI application: routers, error handlers, middleware, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from idledger.api.access_log import AccessLog, access_log_enabled, configure_logger
from idledger.api.errors import install_error_handlers
from idledger.api.paths import BodyLimit, RawPathRouting
from idledger.api.routes import apps, devices, health, history, subscriptions, users
from idledger.api.runtime import Runtime
from idledger.api.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = Runtime.open(settings)
        try:
            yield
        finally:
            app.state.runtime.close()

    app = FastAPI(
        title="idledger",
        summary="Event-sourced identity ledger with a OneSignal-compatible User API",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (apps, users, subscriptions, history, devices, health):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if access_log_enabled():  # IDLEDGER_ACCESS_LOG=1, set by `idledger serve --access-log`
        configure_logger()
        app.add_middleware(AccessLog)  # inside RawPathRouting: it reads the matched route
    app.add_middleware(RawPathRouting)  # outermost: everything inside sees the raw path
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """Validation errors answer 400 (OneSignal's code), not FastAPI's 422: say so."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema
