"""One place that turns errors into HTTP: a 4xx with a body that names the field
and the rule, in OneSignal's shape ``{"errors": [{"code", "title", ...}]}``; a 503
when the store did not answer; and, for anything unforeseen, a 500 in the same
shape (never a plain-text body). Under the console's paths these are HTML pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from idledger.domain.errors import (
    AliasConflict,
    Conflict,
    InvalidValue,
    LedgerError,
    NotFound,
)
from idledger.projections.dead_letters import describe, is_store_failure

STATUS_OF: list[tuple[type[LedgerError], int]] = [
    (InvalidValue, 400),
    (NotFound, 404),
    (Conflict, 409),
]


def status_of(error: LedgerError) -> int:
    return next((code for kind, code in STATUS_OF if isinstance(error, kind)), 400)


class ApiError(Exception):
    """An error the HTTP layer itself raises (authentication, body limits, ...)."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        self.status, self.code, self.title, self.field = status, code, title, field
        self.headers = headers


RETRY_AFTER_SECONDS = 1


def unavailable(code: str, title: str) -> ApiError:
    """A 503 the client should retry: the write (if any) is durable or was refused."""
    return ApiError(503, code, title, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def error_response(
    status: int,
    code: str,
    title: str,
    field: str | None = None,
    meta: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    item: dict[str, Any] = {"code": code, "title": title}
    if field is not None:
        item["field"] = field
    if meta is not None:
        item["meta"] = meta
    return JSONResponse({"errors": [item]}, status_code=status, headers=headers)


def _ledger_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, LedgerError)
    status = status_of(error)
    if isinstance(error, AliasConflict):
        return error_response(
            409, "user-2", "One or more Aliases claimed by another User",
            meta={"conflicting_aliases": error.conflicting},
        )  # fmt: skip
    field = error.field if isinstance(error, InvalidValue) else None
    return error_response(status, error.code, error.message, field)


def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError | ValidationError)
    items = []
    for problem in error.errors():
        location = [str(part) for part in problem.get("loc", ()) if part != "body"]
        items.append(
            {
                "code": "invalid-value",
                "title": problem["msg"],
                "field": ".".join(location) or "body",
            }
        )
    return JSONResponse({"errors": items}, status_code=400)


def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    return error_response(error.status, error.code, error.title, error.field, headers=error.headers)


# Renders an error as an HTML page: (request, status, message, headers).
ErrorPage = Callable[[Request, int, str, dict[str, str] | None], Response]


def serve_error_pages(app: FastAPI, prefix: str, render: ErrorPage) -> None:
    """Errors of requests under ``prefix`` (the console's) become HTML pages."""
    app.state.error_pages = (prefix, render)


def _error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response | None:
    pages: tuple[str, ErrorPage] | None = getattr(request.app.state, "error_pages", None)
    if pages is None:
        return None
    prefix, render = pages
    path = request.url.path
    if path != prefix and not path.startswith(prefix + "/"):
        return None
    return render(request, status, message, headers)


def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    status, detail = error.status_code, str(error.detail)
    headers = dict(error.headers or {})  # 405's Allow, say
    page = _error_page(request, status, detail, headers)
    return page or error_response(status, "http-error", detail, headers=headers)


INTERNAL_ERROR = "the server failed on this request; its log has the error under the request id"


def _internal_error(request: Request, _: Exception) -> Response:
    """Anything unforeseen: a 500 in the usual shape. Starlette raises the error
    again afterwards, and the server logs it as every exception is logged (type
    and stack, never the message: log_setup)."""
    page = _error_page(request, 500, INTERNAL_ERROR)
    return page or error_response(500, "internal-error", INTERNAL_ERROR)


def serving_gate(request: Request) -> Any:
    """The outage gate of the partition a request was routed to (``api.deps``), else
    partition 0's: the gate a store failure met by the request must close."""
    runtime = getattr(request.state, "runtime", None) or request.app.state.runtime
    return runtime.gate


def _store_error(request: Request, error: Exception) -> JSONResponse:
    """The store failed: not the client's fault. When it did not answer (down,
    restarting, locked too long) the gate fails later requests fast until it is
    back; either way nothing was acknowledged, so the client may retry."""
    if is_store_failure(error):
        serving_gate(request).trip(error)
    return error_response(
        503, "store-unavailable", f"the event store did not answer: {describe(error)}",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PersistenceError, _store_error)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
