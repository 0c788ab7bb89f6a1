"""Who may see what: signing in with an app's REST API key (checked as the API
checks it) or the organization key, and the session check on every page."""

from __future__ import annotations

import hmac
import time
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request

from idledger.api.console.rendering import ConsoleError, SignInRequired
from idledger.api.console.session import (
    COOKIE_NAME,
    Session,
    fingerprint,
    open_cookie,
    organization_material,
)
from idledger.api.console.settings import ConsoleClosed, ConsoleSettings, signing_key
from idledger.api.deps import RuntimeDep, app_for_key, is_organization_key
from idledger.api.runtime import Runtime
from idledger.domain.app import App
from idledger.domain.errors import AppNotFound

NO_SUCH_APP = ConsoleError(404, "Not found", "Nothing of this app has that id.")


def console_settings(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.console_settings
    return settings


def cookie_key(request: Request, runtime: Runtime) -> bytes:
    try:
        return signing_key(console_settings(request), runtime.settings.admin_key)
    except ConsoleClosed as closed:
        raise ConsoleError(503, "Console closed", str(closed)) from None


def check_key(
    runtime: Runtime, key: bytes, app_id: str, api_key: str, lifetime: int
) -> Session | None:
    """The session (of ``lifetime`` seconds) for a valid key, else None: keys are
    checked as the API checks them (an unknown app and a wrong key are refused
    alike); an empty app id means the organization key."""
    expires_at = int(time.time()) + lifetime
    if not app_id:
        if not is_organization_key(runtime, api_key):
            return None
        return Session(None, _fingerprint_of(runtime, key, None), expires_at)
    app = app_for_key(runtime, app_id, api_key)
    if app is None:
        return None
    return Session(app.id, fingerprint(key, app.api_key_hash), expires_at)


def signed_in(request: Request, runtime: RuntimeDep) -> Session:
    """The page's session; a missing, tampered, expired or outdated one (its key was
    rotated, or the organization key changed) means signing in again."""
    key = cookie_key(request, runtime)
    session = open_cookie(key, request.cookies.get(COOKIE_NAME))
    if session is None or not _still_valid(runtime, key, session):
        raise SignInRequired
    request.state.console_session = session
    return session


def _still_valid(runtime: Runtime, key: bytes, session: Session) -> bool:
    expected = _fingerprint_of(runtime, key, session.app_id)
    return bool(expected) and hmac.compare_digest(session.fingerprint, expected)


def _fingerprint_of(runtime: Runtime, key: bytes, app_id: UUID | None) -> str:
    """The fingerprint of the key as the ledger has it now ("" when there is none):
    the app's key hash, or the organization key's."""
    if app_id is None:
        admin_key = runtime.settings.admin_key
        return fingerprint(key, organization_material(admin_key)) if admin_key else ""
    try:
        return fingerprint(key, runtime.app(app_id).api_key_hash)
    except AppNotFound:
        return ""


SignedIn = Annotated[Session, Depends(signed_in)]


def app_of(session: Session, runtime: Runtime, app_id: str) -> App:
    """The app a page is about: the session's own, or any app for the organization.
    Another app's id gets the same 404 as an unknown one."""
    try:
        wanted = UUID(app_id)
    except ValueError:
        raise NO_SUCH_APP from None
    if session.app_id is not None and session.app_id != wanted:
        raise NO_SUCH_APP
    try:
        return runtime.app(wanted)
    except AppNotFound:
        raise NO_SUCH_APP from None
