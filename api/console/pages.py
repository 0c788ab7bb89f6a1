"""The console's routes: GET pages, and the two POSTs that sign in and out.
Nothing here writes to the ledger or a read model."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from idledger.api.console import views
from idledger.api.console.access import (
    SignedIn,
    app_of,
    check_key,
    console_settings,
    cookie_key,
)
from idledger.api.console.directory import AppDirectory
from idledger.api.console.find import find
from idledger.api.console.rendering import ConsoleError, ConsoleRoute, page
from idledger.api.console.session import COOKIE_NAME, seal
from idledger.api.deps import RuntimeDep
from idledger.api.queries import MAX_VERSION
from idledger.domain.values import check_text

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
MAX_FORM_BYTES = 8 * 1024
Text = Annotated[str | None, Query()]


def _app_home(app_id: object) -> str:
    return f"/console/apps/{app_id}"


@router.get("")
def home(session: SignedIn) -> Response:
    target = "/console/apps" if session.app_id is None else _app_home(session.app_id)
    return RedirectResponse(target, 303)


# Signing in and out ----------------------------------------------------------


@router.get("/sign-in")
def sign_in_form(
    request: Request,
    runtime: RuntimeDep,
    target: Annotated[str | None, Query(alias="next")] = None,
) -> Response:
    cookie_key(request, runtime)  # a console without a signing key says so here
    return page(request, "sign_in.html", next=_console_path(target), problem=None, app_id="")


@router.post("/sign-in")
async def sign_in(request: Request, runtime: RuntimeDep) -> Response:
    _same_origin(request)
    form = await _form(request)
    app_id, api_key = form.get("app_id", "").strip(), form.get("api_key", "").strip()
    target = _console_path(form.get("next"))
    key = cookie_key(request, runtime)
    lifetime = console_settings(request).session_seconds
    session = await run_in_threadpool(check_key, runtime, key, app_id, api_key, lifetime)
    if session is None:
        return page(request, "sign_in.html", 401, next=target, app_id=app_id,
                    problem="That app id and key do not sign in.")  # fmt: skip
    response = RedirectResponse(target, 303)
    response.set_cookie(
        COOKIE_NAME, seal(key, session, session.expires_at - lifetime), max_age=lifetime,
        path="/console", httponly=True, samesite="lax", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


@router.post("/sign-out")
def sign_out(request: Request) -> Response:
    _same_origin(request)
    response = RedirectResponse("/console/sign-in", 303)
    response.delete_cookie(COOKIE_NAME, path="/console", httponly=True, samesite="lax")
    return response


def _same_origin(request: Request) -> None:
    """The console's POSTs come from its own pages: a browser names the page's origin
    (``Origin``, else ``Referer``), which must be this host. A form on another site
    that posts here is refused, whatever cookies it carries."""
    claimed = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host")
    if claimed == "null" or not host or urlsplit(claimed).netloc != host:
        raise ConsoleError(403, "Refused", "This form must be sent from the console's own "
                           "page (its Origin is not this site).")  # fmt: skip


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ConsoleError(400, "Invalid request", "send the sign-in form as "
                           "application/x-www-form-urlencoded")  # fmt: skip
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ConsoleError(413, "Too large", f"the form is over {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ConsoleError(400, "Invalid request", "the form is not valid UTF-8") from None
    return {name: check_text(name, values[0]) for name, values in fields.items()}


def _console_path(target: str | None) -> str:
    """Where to go after signing in: a console page of this site, nothing else."""
    if not target or not target.startswith("/console") or target.startswith("/console/sign-"):
        return "/console"
    return "/console" if _ambiguous(target) else target


def _ambiguous(path: str) -> bool:
    """A path some browser could read as another host's (``//evil``, ``/\\evil``)."""
    return "//" in path or "\\" in path


# Pages -----------------------------------------------------------------------


@router.get("/apps")
def apps(request: Request, session: SignedIn, runtime: RuntimeDep) -> Response:
    if session.app_id is not None:
        return RedirectResponse(_app_home(session.app_id), 303)
    directory: AppDirectory = request.app.state.console_directory
    return page(request, "apps.html", apps=directory.apps(runtime), app=None)


@router.get("/apps/{app_id}")
def app_home(request: Request, app_id: str, session: SignedIn, runtime: RuntimeDep) -> Response:
    app = app_of(session, runtime, app_id)
    return page(request, "app.html", app=app, health=views.health(runtime), query="",
                problem=None)  # fmt: skip


@router.get("/apps/{app_id}/find")
def find_page(
    request: Request, app_id: str, session: SignedIn, runtime: RuntimeDep, q: Text = None
) -> Response:
    app = app_of(session, runtime, app_id)
    found = find(runtime, app.id, q or "")
    if found is not None:
        kind = "users" if found.kind == "user" else "subscriptions"
        return RedirectResponse(f"{_app_home(app.id)}/{kind}/{found.id}", 303)
    problem = "Nothing in this app matches that." if (q or "").strip() else "Type what to find."
    return page(request, "app.html", 404 if (q or "").strip() else 200, app=app,
                health=views.health(runtime), query=q or "", problem=problem)  # fmt: skip


@router.get("/apps/{app_id}/users/{user_id}")
def user(
    request: Request,
    app_id: str,
    user_id: str,
    session: SignedIn,
    runtime: RuntimeDep,
    at: Text = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> Response:
    app = app_of(session, runtime, app_id)
    moment = views.parse_instant(at)
    shown = views.user_page(runtime, app.id, user_id, moment, before)
    return page(request, "user.html", app=app, health=views.health(runtime), user=shown,
                picker=views.picker_value(moment))  # fmt: skip


@router.get("/apps/{app_id}/subscriptions/{subscription_id}")
def subscription(
    request: Request,
    app_id: str,
    subscription_id: str,
    session: SignedIn,
    runtime: RuntimeDep,
    at: Text = None,
) -> Response:
    app = app_of(session, runtime, app_id)
    moment = views.parse_instant(at)
    shown = views.subscription_page(runtime, app.id, subscription_id, moment)
    return page(request, "subscription.html", app=app, health=views.health(runtime),
                sub=shown, picker=views.picker_value(moment))  # fmt: skip


@router.get("/apps/{app_id}/mau")
def mau(
    request: Request,
    app_id: str,
    session: SignedIn,
    runtime: RuntimeDep,
    first: Annotated[str | None, Query(alias="from")] = None,
    last: Annotated[str | None, Query(alias="to")] = None,
) -> Response:
    app = app_of(session, runtime, app_id)
    shown = views.mau_page(runtime, app.id, *views.mau_range(first, last))
    return page(request, "mau.html", app=app, health=views.health(runtime), mau=shown)


@router.get("/apps/{app_id}/mau.csv")
def mau_csv(
    app_id: str,
    session: SignedIn,
    runtime: RuntimeDep,
    first: Annotated[str | None, Query(alias="from")] = None,
    last: Annotated[str | None, Query(alias="to")] = None,
) -> Response:
    app = app_of(session, runtime, app_id)
    shown = views.mau_page(runtime, app.id, *views.mau_range(first, last))
    name = quote(f"mau-{shown.first}-{shown.last}.csv")
    return PlainTextResponse(
        views.mau_csv(shown), media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip
