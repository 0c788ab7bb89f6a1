"""What every HTTP request leaves behind: a request id, metrics, an access line.

One pure ASGI middleware, so that a request pays for one layer:

- **Request id**: the client's ``X-Request-Id`` if it looks like an id (letters,
  digits, ``._:-``, at most 64), else a fresh one; echoed in the response's
  ``X-Request-Id`` and carried by every log line written while the request is
  served (``log_setup.current_request``).
- **Metrics** (``api/metrics.py``), unless ``IDLEDGER_METRICS=0``.
- **Access log**: one INFO line per request on the ``idledger.access`` logger
  (DEBUG for ``/metrics`` and ``/health``, which are polled):
  method, route *template* (``/apps/{app_id}/users/by/{alias_label}/{alias_id}``),
  status and duration; with the request id and app id as fields. Path parameters
  other than a well-formed app id, the raw path and the query string are never
  logged; a request that no route matched is ``<unmatched>``. Switched by
  ``IDLEDGER_ACCESS_LOG`` (``1`` on; ``idledger serve`` sets it from
  ``--access-log`` / ``--no-access-log``, default on, in every worker process).
  uvicorn's own access log, which prints raw paths, is always off.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idledger.api import metrics
from idledger.api.log_setup import ACCESS_LOGGER, RequestContext, current_request, sane_request_id
from idledger.api.route_template import route_of, template_of
from idledger.api.switches import switch

ENV_VAR = "IDLEDGER_ACCESS_LOG"
REQUEST_ID_HEADER = b"x-request-id"
# Scraped and probed every few seconds: their lines would drown the others.
QUIET_ROUTES = frozenset({metrics.PATH, "/health"})
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

logger = logging.getLogger(ACCESS_LOGGER)


def access_log_enabled() -> bool:
    """Whether ``IDLEDGER_ACCESS_LOG`` asks for the access log (``1``; ``0`` or unset: off)."""
    return switch(ENV_VAR, default=False)


class RequestTelemetry:
    """Register it inside ``RawPathRouting`` (which hands the router a copy of the
    scope): the router records the matched route in that copy, and this
    middleware reads it from there."""

    def __init__(self, app: ASGIApp, *, access_log: bool, count: bool) -> None:
        self.app = app
        self.access_log = access_log
        self.count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = sane_request_id(_header(scope, REQUEST_ID_HEADER))
        echoed = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        context = current_request.set(RequestContext(request_id, scope))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:  # an error, or the request cancelled
            if status is None:
                status = 500  # what ServerErrorMiddleware, outside us, will answer
            self._done(scope, status, time.perf_counter() - start)
            # The request stays current: the server logs the error next, in this
            # same task, and its line then names the request (the task ends after).
            raise
        self._done(scope, status, time.perf_counter() - start)
        current_request.reset(context)

    def _done(self, scope: Scope, status: int | None, seconds: float) -> None:
        method = scope.get("method", "")
        if method not in KNOWN_METHODS:
            method = "OTHER"  # not one metrics series per method a client invents
        route = route_of(scope, status)
        template = template_of(route)
        if self.count:
            metrics.count_request(method, route, template, status, seconds)
            counts = getattr(getattr(scope.get("app"), "state", None), "ledger_counts", None)
            if counts is not None and method in metrics.WRITE_METHODS:
                counts.after_write()
        if self.access_log:
            duration_ms = round(seconds * 1000, 1)
            logger.log(
                logging.DEBUG if template in QUIET_ROUTES else logging.INFO,
                "%s %s %s %.1fms",
                method,
                template,
                status if status is not None else "-",
                duration_ms,
                extra={
                    "method": method,
                    "route": template,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None
