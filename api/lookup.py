"""Finding users and subscriptions for a request.

Writes resolve an alias through the ledger's own claims (never stale); reads
come from the read models, after the read-your-writes wait of the write before.
"""

from __future__ import annotations

from urllib.parse import unquote
from uuid import UUID

from idledger.api.convert import identity_of, user_out
from idledger.api.runtime import Runtime
from idledger.api.schemas import IdentityOut, UserOut
from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, alias_namespace
from idledger.domain.errors import InvalidValue, SubscriptionNotFound, UserNotFound
from idledger.domain.user import User
from idledger.domain.values import check_text


def segment(value: str, field: str = "path") -> str:
    """Path segments arrive percent-encoded (see ``api.paths``); decode after routing.
    A decoded segment obeys the same text rules as a body (no NUL, no control
    character, valid UTF-8), so no lookup ever sends the store what it cannot hold."""
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise InvalidValue(field, "is not valid UTF-8 once percent-decoded") from None
    return check_text(field, decoded, identifier=True)


def subscription_uuid(subscription_id: str) -> UUID:
    """A subscription id from a path segment; one that is no UUID is not found."""
    try:
        return UUID(segment(subscription_id))
    except ValueError:
        raise SubscriptionNotFound(subscription_id) from None


def user_id_for(runtime: Runtime, app_id: UUID, label: str, alias_id: str) -> UUID:
    label, alias_id = segment(label, "alias_label"), segment(alias_id, "alias_id")
    if label == "onesignal_id":
        try:
            return UUID(alias_id)
        except ValueError:
            raise UserNotFound(alias_id) from None
    namespace = EXTERNAL_ID_NAMESPACE if label == "external_id" else alias_namespace(label)
    holder = runtime.ledger.read(app_id).holder(namespace, alias_id)
    if holder is None:
        raise UserNotFound(f"{label}={alias_id}")
    return holder


def user_for(runtime: Runtime, app_id: UUID, label: str, alias_id: str) -> User:
    label, alias_id = segment(label, "alias_label"), segment(alias_id, "alias_id")
    user = runtime.models.profiles.user_by_alias(app_id, label, alias_id)
    if user is None:
        raise UserNotFound(f"{label}={alias_id}")
    return user


def live_user(runtime: Runtime, app_id: UUID, user_id: UUID) -> User:
    user = runtime.models.profiles.user(app_id, user_id)
    if user is None:
        raise UserNotFound(user_id)
    return user


def profile_body(runtime: Runtime, app_id: UUID, label: str, alias_id: str) -> UserOut:
    """A user with its subscriptions, by a decoded alias, in one read of the read model."""
    found = runtime.models.profiles.profile(app_id, label, alias_id)
    if found is None:
        raise UserNotFound(f"{label}={alias_id}")
    return user_out(*found)


def user_body(runtime: Runtime, app_id: UUID, user_id: UUID) -> UserOut:
    return profile_body(runtime, app_id, "onesignal_id", str(user_id))


def identity_body(runtime: Runtime, app_id: UUID, user_id: UUID) -> IdentityOut:
    return IdentityOut(identity=identity_of(live_user(runtime, app_id, user_id)))
