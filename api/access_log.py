"""An access log that names routes, never paths.

uvicorn's own access log prints the request path and query string, which hold
external ids, aliases, tokens and email addresses (``/users/by/external_id/alice``).
This middleware logs one line per HTTP request on the ``idledger.access`` logger
instead: the method, the matched route *template*
(``/apps/{app_id}/users/by/{alias_label}/{alias_id}``), the status code and the
duration. Path parameters, the raw path and the query string are never logged; a
request that no route matched logs ``<unmatched>``.

It is switched by the environment variable ``IDLEDGER_ACCESS_LOG``: ``1`` turns it
on, anything else (or unset) leaves it out of the application entirely, so it costs
nothing when off. ``idledger serve`` sets the variable from ``--access-log`` /
``--no-access-log`` (default on) before uvicorn imports the app factory, in every
worker process, and always turns uvicorn's own access log off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import fastapi.routing
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENV_VAR = "IDLEDGER_ACCESS_LOG"
UNMATCHED = "<unmatched>"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

logger = logging.getLogger("idledger.access")


def access_log_enabled() -> bool:
    """Whether ``IDLEDGER_ACCESS_LOG`` asks for the access log (``1``)."""
    return os.environ.get(ENV_VAR, "0").strip() == "1"


def configure_logger() -> None:
    """Make ``idledger.access`` print under uvicorn, which configures only its own
    loggers: a stderr handler unless one is already attached, and no propagation
    (a root handler would print every line twice)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class AccessLog:
    """Pure ASGI middleware: one INFO line per HTTP request, once it is over.

    Register it inside ``RawPathRouting`` (which hands the router a copy of the
    scope): the router records the matched route in that copy, and this
    middleware reads it from there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            if status is None:
                status = 500  # what ServerErrorMiddleware, outside us, will answer
            raise
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            logger.info(
                "%s %s %s %.1fms",
                scope.get("method", "-"),
                route_template(scope, status),
                status if status is not None else "-",
                elapsed_ms,
            )


def route_template(scope: Scope, status: int | None) -> str:
    """The template of the route that handled the request, or ``<unmatched>``."""
    route = scope.get("route")
    if route is None and status != 404:
        # Answered before routing (413 from BodyLimit, say): find the route the
        # router would have chosen. A 404 already means no route matched.
        route = _match(scope)
    if route is None:
        return UNMATCHED
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


def _match(scope: Scope) -> Any:
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", None)
    if not routes:
        return None
    # FastAPI keeps included routers whole; iter_route_contexts (where present)
    # yields their routes one by one, with the full path.
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    candidates = iterate(routes) if iterate is not None else routes
    probe = {**scope}
    partial = None
    for candidate in candidates:
        match, _ = candidate.matches(probe)
        if match is Match.FULL:
            return candidate
        if match is Match.PARTIAL and partial is None:
            partial = candidate  # e.g. 405: the path matches, the method does not
    return partial
