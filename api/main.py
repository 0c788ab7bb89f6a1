"""The FastAPI application: routers, error handlers, middleware, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as package_version

from fastapi import FastAPI

from idledger.api.access_log import RequestTelemetry, access_log_enabled
from idledger.api.console import install_console
from idledger.api.errors import install_error_handlers
from idledger.api.log_setup import ensure_logging
from idledger.api.metrics import LedgerCounts, install_metrics, metrics_enabled
from idledger.api.openapi_docs import install_docs
from idledger.api.paths import BodyLimit, RawPathRouting
from idledger.api.routes import apps, devices, health, history, subscriptions, users
from idledger.api.runtime import Runtime
from idledger.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    ensure_logging()  # a no-op under `idledger serve`, which configured it
    counting = metrics_enabled()  # IDLEDGER_METRICS (on unless 0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = Runtime.open(settings)
        if counting:
            app.state.ledger_counts = LedgerCounts(
                *(partition.ledger for partition in app.state.runtime.each_partition())
            )
        try:
            yield
        finally:
            app.state.runtime.close()

    app = FastAPI(
        title="idledger",
        summary="Event-sourced identity ledger with a OneSignal-compatible User API",
        version=package_version("idledger"),
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc: install_docs, with assets served locally
        redoc_url=None,
    )
    install_error_handlers(app)
    for module in (apps, users, subscriptions, history, devices, health):
        app.include_router(module.router)
    install_console(app)  # the read-only audit console under /console
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if counting:
        install_metrics(app)  # GET /metrics
    # Request ids, metrics and the access log (IDLEDGER_ACCESS_LOG=1, set by `idledger
    # serve --access-log`); inside RawPathRouting: it reads the matched route.
    app.add_middleware(RequestTelemetry, access_log=access_log_enabled(), count=counting)
    app.add_middleware(RawPathRouting)  # outermost: everything inside sees the raw path
    install_docs(app)
    return app
