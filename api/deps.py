"""Request dependencies: the runtime, per-app authentication, the admin key."""

from __future__ import annotations

import hmac
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Header, Path, Request

from idledger.api.errors import ApiError
from idledger.api.runtime import Runtime
from idledger.domain.errors import AppNotFound
from idledger.domain.unit_of_work import start_writing


# Dependencies are async so that lookups served on the event loop stay there.
async def get_runtime(request: Request) -> Runtime:
    """The runtime, unless the store is known to be down: then 503 at once."""
    runtime: Runtime = request.app.state.runtime
    runtime.gate.check()
    # Runs in the request's own context, which the route's worker thread copies:
    # the positions this request writes are noted from a clean slate.
    start_writing()
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

UNAUTHORIZED = ApiError(401, "unauthorized", "missing or invalid Authorization: Key <REST API key>")


def presented_key(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() not in ("key", "basic") or not key.strip():
        raise UNAUTHORIZED
    return key.strip()


async def authenticated_app(
    runtime: RuntimeDep,
    app_id: Annotated[str, Path(description="The app's id (UUID)")],
    authorization: Annotated[str | None, Header()] = None,
) -> UUID:
    """The app whose REST API key was presented. An unknown app and a wrong key get
    the same answer, so one app's key cannot even confirm another app exists."""
    key = presented_key(authorization)
    try:
        app = runtime.app(UUID(app_id))
    except (ValueError, AppNotFound):
        raise UNAUTHORIZED from None
    if not app.accepts(key):
        raise UNAUTHORIZED
    return app.id


AppId = Annotated[UUID, Depends(authenticated_app)]


def require_admin(
    runtime: RuntimeDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    expected = runtime.settings.admin_key
    if not expected or not hmac.compare_digest(presented_key(authorization), expected):
        raise ApiError(
            401, "unauthorized", "missing or invalid Authorization: Key <organization key>"
        )


Admin = Annotated[None, Depends(require_admin)]
