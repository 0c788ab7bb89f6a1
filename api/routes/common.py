"""Shared pieces of the routers: the failures they document, identity bodies."""

from __future__ import annotations

from idledger.api.errors import ApiError
from idledger.api.examples import (
    APP_KEY_REFUSED,
    INVALID_FIELD,
    INVALID_SEGMENT,
    RACES_LOST,
    READ_MODEL_BEHIND,
    STORE_DOWN,
    TOO_LARGE,
)

# The failures a route can give, by what it does (``errors(*KEYED, *PATH, ...)``):
KEYED = (APP_KEY_REFUSED, STORE_DOWN)  # takes the app's key, so it needs the store
PATH = (INVALID_SEGMENT,)  # decodes path segments (ids, alias labels)
BODY = (INVALID_FIELD, TOO_LARGE)  # reads a JSON body
# A command may lose its optimistic-concurrency races, and waits for the read models.
COMMAND = (RACES_LOST, READ_MODEL_BEHIND)


def identity_change(identity: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """Split an identity body into the external_id and the custom aliases."""
    if "onesignal_id" in identity:
        raise ApiError(400, "invalid-value", "onesignal_id is assigned, not set", "identity")
    aliases = {k: v for k, v in identity.items() if k != "external_id"}
    return identity.get("external_id"), aliases
