"""The search box: one text, the API's lookup rules, the page it belongs to.

Tried in order, each as the API resolves it:
- ``label:value``: a live user by alias (``GET /users/by/{label}/{value}``), when
  that label exists;
- a UUID: a subscription with an ownership timeline
  (``/idledger/subscriptions/{id}/ownership``), else a user of this app in any state
  (``/idledger/users/{id}/as_of``);
- an external_id (``GET /users/by/external_id/{value}``);
- a subscription token of any type, through the ledger's uniqueness claims (as a
  create or a device association finds an existing subscription).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from idledger.api.queries import user_of_app
from idledger.api.runtime import Runtime
from idledger.domain.claim import token_namespace
from idledger.domain.errors import InvalidValue, UserNotFound
from idledger.domain.values import SubscriptionType, check_text

MAX_QUERY_CHARS = 1024


@dataclass(frozen=True)
class Found:
    kind: Literal["user", "subscription"]
    id: UUID


def find(runtime: Runtime, app_id: UUID, query: str) -> Found | None:
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidValue("q", f"must be at most {MAX_QUERY_CHARS} characters")
    text = check_text("q", query.strip(), identifier=True)
    if not text:
        return None
    label, colon, value = text.partition(":")
    if colon and label and value:
        user = runtime.models.profiles.user_by_alias(app_id, label, value)
        if user is not None:
            return Found("user", user.id)
    if (as_uuid := _uuid(text)) is not None:
        if runtime.models.ownership.timeline(app_id, as_uuid):
            return Found("subscription", as_uuid)
        try:
            return Found("user", user_of_app(runtime, app_id, str(as_uuid)))
        except UserNotFound:
            pass
    user = runtime.models.profiles.user_by_alias(app_id, "external_id", text)
    if user is not None:
        return Found("user", user.id)
    view = runtime.ledger.read(app_id)
    for kind in SubscriptionType:
        holder = view.holder(token_namespace(kind), text)
        if holder is not None:
            return Found("subscription", holder)
    return None


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
