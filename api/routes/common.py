"""Shared pieces of the routers: documented error responses, identity bodies."""

from __future__ import annotations

from typing import Any

from idledger.api.errors import ApiError
from idledger.api.schemas import ErrorBody

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A field broke a rule; the body names it"},
    401: {"model": ErrorBody, "description": "Missing or invalid Authorization: Key"},
    404: {"model": ErrorBody, "description": "No such user, alias or subscription"},
    409: {"model": ErrorBody, "description": "Alias claimed by another user, or limit reached"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    503: {"model": ErrorBody, "description": "The event store did not answer; retry"},
}


def identity_change(identity: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """Split an identity body into the external_id and the custom aliases."""
    if "onesignal_id" in identity:
        raise ApiError(400, "invalid-value", "onesignal_id is assigned, not set", "identity")
    aliases = {k: v for k, v in identity.items() if k != "external_id"}
    return identity.get("external_id"), aliases
