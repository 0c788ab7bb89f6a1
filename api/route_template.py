"""The route *template* a request was matched to (``/apps/{app_id}/users``): what
logs and metrics name a request by. The raw path would put external ids, aliases,
tokens and addresses into them, and give metrics one series per user. A file
of a mounted folder is named by the mount's template (``/console/static/{path}``)."""

from __future__ import annotations

from typing import Any

import fastapi.routing
from starlette.routing import Match, Mount
from starlette.types import Scope

UNMATCHED = "<unmatched>"


def route_of(scope: Scope, status: int | None) -> Any:
    """The route that handled the request, or None when no route matched."""
    route = scope.get("route") or _mount_of(scope)
    if route is None and status is not None and status != 404:
        # Answered before routing (413 from BodyLimit, say): find the route the
        # router would have chosen. A 404 already means no route matched.
        route = _match(scope)
    return route


def template_of(route: Any) -> str:
    if route is None:
        return UNMATCHED
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else UNMATCHED


def _mount_of(scope: Scope) -> Mount | None:
    """The mount (static files) that served the request: routing records no route
    for one, only the mounted app, as the scope's endpoint."""
    endpoint = scope.get("endpoint")
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", None)
    if endpoint is None or not routes:
        return None
    return next((r for r in routes if isinstance(r, Mount) and r.app is endpoint), None)


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
