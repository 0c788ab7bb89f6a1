"""Pages: Jinja2 templates (every value escaped), the console's response headers,
and the route class that turns any error into an HTML page: the API's statuses for
the ledger's errors, 503 when the store did not answer, and a 500 page (logged as
type and stack) for anything unforeseen, never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from eventsourcing.persistence import PersistenceError
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException

from idledger.api.errors import RETRY_AFTER_SECONDS, ApiError, serving_gate, status_of
from idledger.domain.errors import LedgerError, NotFound
from idledger.projections.dead_letters import describe, is_store_failure

HERE = Path(__file__).parent
SIGN_IN_PATH = "/console/sign-in"
log = logging.getLogger(__name__)

# Nothing runs but what the console itself serves; no page can be framed; pages
# hold personal data, so no cache keeps them and no other site learns their URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _when(moment: datetime | None) -> str:
    """An instant as the pages show it: UTC, to the millisecond."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def _iso(moment: datetime) -> str:
    return moment.isoformat()


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name: a value is always text
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["when"] = _when
templates.filters["iso"] = _iso
templates.filters["path"] = lambda value: quote(str(value), safe="")
templates.globals["urlencode"] = urlencode


class ConsoleError(Exception):
    """A page that cannot be shown: its status and what to tell the reader."""

    def __init__(
        self, status: int, title: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message
        self.headers = headers


class SignInRequired(Exception):
    """No valid session: go to the sign-in page (and come back afterwards)."""


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "console_session", None)
    html = templates.get_template(template).render(session=session, **context)
    return secured(HTMLResponse(html, status_code=status))  # type: ignore[return-value]


def error_page(request: Request, error: ConsoleError) -> HTMLResponse:
    shown = page(
        request, "error.html", error.status, title=error.title, message=error.message, app=None
    )
    shown.headers.update(error.headers or {})
    return shown


def status_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error page for a status the API's handlers answered (an unknown console
    path, a method not allowed, a failure outside any page)."""
    return error_page(request, ConsoleError(status, HTTPStatus(status).phrase, message, headers))


def sign_in_redirect(request: Request) -> Response:
    """To the sign-in page, remembering this console page (and only a console page)."""
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return secured(RedirectResponse(f"{SIGN_IN_PATH}?{urlencode({'next': target})}", 303))


def as_console_error(request: Request, error: Exception) -> ConsoleError:
    """The page for an error, with the status the API answers for it."""
    if isinstance(error, ConsoleError):
        return error
    if isinstance(error, ApiError):
        title = "Unavailable" if error.status >= 500 else "Refused"
        return ConsoleError(error.status, title, error.title, error.headers)
    if isinstance(error, NotFound):  # the same words for another app's id and an unknown one
        return ConsoleError(404, "Not found", "Nothing of this app has that id.")
    if isinstance(error, LedgerError):
        status = status_of(error)
        return ConsoleError(status, "Invalid value" if status == 400 else "Refused", error.message)
    if isinstance(error, RequestValidationError):
        problems = "; ".join(str(problem.get("msg", "")) for problem in error.errors())
        return ConsoleError(400, "Invalid request", problems or "the request is not valid")
    if isinstance(error, StarletteHTTPException):
        phrase = HTTPStatus(error.status_code).phrase
        return ConsoleError(error.status_code, phrase, str(error.detail), dict(error.headers or {}))
    if isinstance(error, PersistenceError):
        if is_store_failure(error):
            serving_gate(request).trip(error)
        return ConsoleError(503, "Store unavailable", f"The event store did not answer: "
                            f"{describe(error)}. Try again in a moment.",
                            {"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
    # Unforeseen: logged as type and stack only (the message may quote a value).
    log.error("console page failed", exc_info=error)
    return ConsoleError(500, "Server error", "The console failed on this page; its log has "
                        "the error under the request id.")  # fmt: skip


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class ConsoleRoute(APIRoute):
    """Errors become HTML pages (the API's handlers answer JSON), with the
    console's headers; a missing or stale session becomes a sign-in redirect."""

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return secured(await handle(request))
            except SignInRequired:
                return sign_in_redirect(request)
            except Exception as error:
                return error_page(request, as_console_error(request, error))

        return handler
