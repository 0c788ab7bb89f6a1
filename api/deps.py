"""Request dependencies: the runtime, per-app authentication, the admin key."""

from __future__ import annotations

import copy
import hmac
from typing import Annotated
from uuid import UUID

from fastapi import Depends, Header, Path, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from idledger.api.errors import ApiError
from idledger.api.lookup import segment
from idledger.api.read_replicas import (
    MIN_POSITION_HEADER,
    POSITION_HEADER,
    READ_FROM_HEADER,
    answering,
    min_position,
)
from idledger.api.runtime import Partitions, Runtime
from idledger.domain.app import App
from idledger.domain.errors import AppNotFound, InvalidValue
from idledger.domain.unit_of_work import start_writing


# Dependencies are async so that lookups served on the event loop stay there.
async def get_runtime(request: Request, response: Response) -> Runtime:
    """The runtime of the app the path names (its partition's), unless its store is
    known to be down: then 503 at once. An unknown app gets partition 0's, whose
    routes answer it as they would any unknown app."""
    runtime: Runtime = request.app.state.runtime
    app_id = request.path_params.get("app_id")
    partitions = runtime.partitions
    if app_id is not None and partitions is not None and len(partitions.runtimes) > 1:
        # Searching the partitions reads the store: not on the event loop.
        known = partitions.known(app_id)
        if known is None:
            known = await run_in_threadpool(_partition_of, partitions, runtime, app_id)
        runtime = known
    request.state.runtime = runtime  # whose gate a store failure of this request closes
    runtime.gate.check()
    # Runs in the request's own context, which the route's worker thread copies:
    # the positions this request writes are noted from a clean slate.
    start_writing()
    answering(response)  # a write's answer carries its log position
    return runtime


def _partition_of(partitions: Partitions, home: Runtime, app_id: str) -> Runtime:
    """The app's partition; ``home`` (partition 0) for an id that names no app."""
    try:
        return partitions.of_app(UUID(segment(app_id)))
    except (ValueError, AppNotFound, InvalidValue):
        return home


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_reader(
    runtime: RuntimeDep,
    response: Response,
    wanted: Annotated[
        str | None,
        Header(
            alias=MIN_POSITION_HEADER,
            description=f"A write's {POSITION_HEADER}: the answer then includes that write "
            "(read-your-writes), from a hot standby that has it or else from the primary.",
        ),
    ] = None,
) -> Runtime:
    """The runtime a read answers from: with hot standbys (IDLEDGER_READ_URL), its read
    models are those of the standby chosen for this read (api/read_replicas.py)."""
    position = min_position(wanted)
    if runtime.replicas is None:
        return runtime
    source, models = await runtime.replicas.choose(position)
    response.headers[READ_FROM_HEADER] = source
    if models is runtime.models:
        return runtime
    reader = copy.copy(runtime)  # shallow: the same ledger, gate and caches
    reader.models = models
    return reader


ReaderDep = Annotated[Runtime, Depends(get_reader)]

UNAUTHORIZED = ApiError(401, "unauthorized", "missing or invalid Authorization: Key <REST API key>")

# The schemes say how to authorize (so /docs has an Authorize button); the checks
# below stay ours: `Key <key>` (or `Basic <key>`), and the same 401 for every miss.
APP_KEY = APIKeyHeader(
    name="Authorization",
    scheme_name="AppKey",
    description="The app's REST API key, as `Key <REST API key>` (type `Key ` too). "
    "POST /apps shows it once, in `basic_auth_key`.",
    auto_error=False,
)
ORGANIZATION_KEY = APIKeyHeader(
    name="Authorization",
    scheme_name="OrganizationKey",
    description="The organization key (IDLEDGER_ADMIN_KEY), as `Key <organization key>`.",
    auto_error=False,
)


def presented_key(authorization: str | None) -> str:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() not in ("key", "basic") or not key.strip():
        raise UNAUTHORIZED
    return key.strip()


async def authenticated_app(
    runtime: RuntimeDep,
    app_id: Annotated[str, Path(description="The app's id (UUID)")],
    authorization: Annotated[str | None, Security(APP_KEY)],
) -> UUID:
    """The app whose REST API key was presented. An unknown app and a wrong key get
    the same answer, so one app's key cannot even confirm another app exists."""
    app = app_for_key(runtime, app_id, presented_key(authorization))
    if app is None:
        raise UNAUTHORIZED
    return app.id


def app_for_key(runtime: Runtime, app_id: str, key: str) -> App | None:
    """The app if ``key`` is its REST API key; None for an unknown app and a wrong
    key alike (the console's sign-in checks keys with it too)."""
    try:
        app = runtime.app(UUID(app_id))
    except (ValueError, AppNotFound):
        return None
    return app if app.accepts(key) else None


def is_organization_key(runtime: Runtime, key: str) -> bool:
    """Whether ``key`` is the organization key (none set: nothing is)."""
    expected = runtime.settings.admin_key
    return bool(expected) and hmac.compare_digest(key.encode(), (expected or "").encode())


AppId = Annotated[UUID, Depends(authenticated_app)]


def require_admin(
    runtime: RuntimeDep, authorization: Annotated[str | None, Security(ORGANIZATION_KEY)]
) -> None:
    if not is_organization_key(runtime, presented_key(authorization)):
        raise ApiError(
            401, "unauthorized", "missing or invalid Authorization: Key <organization key>"
        )


Admin = Annotated[None, Depends(require_admin)]
