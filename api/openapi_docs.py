"""What the OpenAPI document says beyond the routes' types, and the interactive docs.

Each route declares the errors it can give (``errors(...)``), each with an example
body, and examples of its request and answers. ``/docs`` (Swagger UI) and
``/redoc`` are served with assets shipped in the package (``api/static/``, pinned
from the npm registry with their licences), so they work on a machine without
internet; their Content-Security-Policy keeps the browser from loading anything
from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from idledger.api.schemas import ErrorBody

JSON = "application/json"
STATIC = Path(__file__).with_name("static")
ASSETS = "/docs/assets"
# Inline scripts and styles are the pages' own (FastAPI's templates; Redoc styles
# itself inline and runs its search in a blob: worker); everything else is ours.
# (Redoc's "API docs by Redocly" footer asks its CDN for a logo: refused, the text
# link stays.)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'self'"
)

INFO = """\
idledger's HTTP API: OneSignal's User API (v1), so that an existing OneSignal
client works by changing only its host, and idledger's own endpoints (ownership
history, users as of an instant, their events, MAU, device association).

**Authorization.** Every route under `/apps/{app_id}/` takes the app's REST API
key as `Authorization: Key <REST API key>` (scheme `AppKey`); `POST /apps`,
`GET /apps/{app_id}` and the key rotation take the organization key
(`IDLEDGER_ADMIN_KEY`) the same way (scheme `OrganizationKey`). In **Authorize**,
type the whole value, `Key ` included.

**Errors** are OneSignal's shape, `{"errors": [{"code", "title", "field", "meta"}]}`;
each route lists the ones it can give. A 503 carries `Retry-After`.
"""


# FastAPI writes the document without nulls (exclude_none), which would drop every
# null of an example (an interval's open "end"): examples carry this marker instead,
# and the finished document gets its nulls back.
NULL = "__openapi_null__"


def example(summary: str, value: Any) -> dict[str, Any]:
    return {"summary": summary, "value": _marked(value)}


def _marked(value: Any) -> Any:
    if value is None:
        return NULL
    if isinstance(value, dict):
        return {key: _marked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_marked(item) for item in value]
    return value


def _unmarked(value: Any) -> Any:
    if value == NULL:
        return None
    if isinstance(value, dict):
        return {key: _unmarked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unmarked(item) for item in value]
    return value


def request_examples(**examples: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route: named examples of its JSON request body."""
    return {"requestBody": {"content": {JSON: {"examples": examples}}}}


def answer(description: str, **examples: dict[str, Any]) -> dict[str, Any]:
    """One success response: what it means, with named examples of its body."""
    return {"description": description, "content": {JSON: {"examples": examples}}}


@dataclass(frozen=True)
class Failure:
    """One way a route can fail: its status, and an example of the body it gives."""

    status: int
    name: str
    summary: str
    code: str
    title: str
    field: str | None = None
    meta: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {"code": self.code, "title": self.title}
        if self.field is not None:
            item["field"] = self.field
        if self.meta is not None:
            item["meta"] = self.meta
        return {"errors": [item]}


STATUS_MEANING = {
    400: "A field, a path segment or a query parameter broke a rule; the body names it",
    401: "Missing or wrong Authorization (an unknown app and a wrong key look alike)",
    404: "No such user, alias, subscription or app",
    409: "A conflict: nothing was written",
    413: "Request body too large (IDLEDGER_MAX_BODY_BYTES)",
    503: "The store or the read models cannot answer now; retry after Retry-After",
}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def errors(*failures: Failure) -> dict[int | str, dict[str, Any]]:
    """``responses`` for the failures a route can give, grouped by status."""
    responses: dict[int | str, dict[str, Any]] = {}
    for failure in failures:
        response = responses.setdefault(
            failure.status,
            {
                "model": ErrorBody,
                "description": STATUS_MEANING[failure.status],
                "content": {JSON: {"examples": {}}},
            },
        )
        response["content"][JSON]["examples"][failure.name] = example(failure.summary, failure.body)
        if failure.status == 503:
            response["headers"] = RETRY_AFTER
    return dict(sorted(responses.items(), key=lambda item: int(item[0])))


def merge(*responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    merged: dict[int | str, dict[str, Any]] = {}
    for part in responses:
        merged.update(part)
    return merged


# -- the document ----------------------------------------------------------------

# FastAPI documents 422 for validation; idledger answers 400 (OneSignal's code).
UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError")


def openapi_document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, description=INFO,
            routes=app.routes,
        )  # fmt: skip
        for operation in _operations(schema):
            operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in UNUSED_SCHEMAS:
            components.pop(name, None)
        app.openapi_schema = _unmarked(schema)
    return app.openapi_schema


def _operations(schema: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for path in schema["paths"].values():
        yield from path.values()


# -- the interactive docs, offline -------------------------------------------------

SWAGGER_UI = f"{ASSETS}/swagger-ui"
REDOC = f"{ASSETS}/redoc"
FAVICON = f"{SWAGGER_UI}/favicon-32x32.png"


def swagger_page(app: FastAPI) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title}: API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url=FAVICON,
        # validatorUrl: Swagger UI would otherwise show a badge fetched from swagger.io.
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def redoc_page(app: FastAPI) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title}: API",
        redoc_js_url=f"{REDOC}/redoc.standalone.js",
        redoc_favicon_url=FAVICON,
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install_docs(app: FastAPI) -> None:
    """The OpenAPI document, ``/docs`` and ``/redoc``, with their assets from the package.
    The app is created with ``docs_url=None, redoc_url=None`` (FastAPI's own pages
    load their assets from a CDN)."""
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="docs-assets")

    async def docs() -> HTMLResponse:
        return swagger_page(app)

    async def redoc() -> HTMLResponse:
        return redoc_page(app)

    app.add_api_route("/docs", docs, include_in_schema=False)
    app.add_api_route("/redoc", redoc, include_in_schema=False)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
