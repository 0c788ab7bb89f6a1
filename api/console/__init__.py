"""The audit console: read-only pages under ``/console``, served by the API's own
process, signed in with an app's REST API key or the organization key."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from idledger.api.console.directory import AppDirectory
from idledger.api.console.pages import router
from idledger.api.console.rendering import HERE, status_page
from idledger.api.console.settings import ConsoleSettings
from idledger.api.errors import serve_error_pages


def install_console(app: FastAPI) -> None:
    """Add the console's pages and its static files (shipped in the package)."""
    app.state.console_settings = ConsoleSettings()
    app.state.console_directory = AppDirectory()  # one per app: it caches one store's apps
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    serve_error_pages(app, "/console", status_page)  # an unknown console path: an HTML 404
