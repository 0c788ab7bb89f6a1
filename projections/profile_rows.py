"""User and subscription state as plain JSON rows, evolved event by event without
building aggregates: the profiles read model's fold.

Each function below is the row form of one domain event's ``apply`` (domain/user.py,
domain/subscription.py), and ``fold`` is the row form of ``DomainEvent.mutate``
(the same order checks, the same errors). A row is the dict that
``projections.state`` dumps for the aggregate: the same keys in the same order, so
``dumps`` writes the very JSON the pydantic models write.
``tests/unit/test_profile_rows.py`` holds the two to each other for every event
class of both aggregates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.utils import resolve_topic

from idledger.domain import subscription as sub
from idledger.domain import user
from idledger.domain.base import CreationEvent, DomainEvent, EventOrderError
from idledger.domain.values import UserProperties
from idledger.projections.records import Recorded
from idledger.projections.state import (
    SubscriptionState,
    UserState,
    subscription_from_json,
    subscription_to_json,
    user_from_json,
    user_to_json,
)

Row = dict[str, Any]
USER, SUBSCRIPTION = "user", "subscription"
_BLANK_PROPERTIES: Row = UserProperties().model_dump(mode="json")


def later(moment: str, than: str | None) -> bool:
    """Whether ISO time ``moment`` is after ``than``; two UTC times written alike
    compare as text, others are parsed."""
    if than is None:
        return True
    if moment[-1] == "Z" == than[-1] and len(moment) == len(than):
        return moment > than
    return datetime.fromisoformat(moment) > datetime.fromisoformat(than)


def dumps(row: Row) -> str:
    return orjson.dumps(row).decode()


def loads(text: str | bytes) -> Row:
    loaded: Row = orjson.loads(text)
    return loaded


# --- users ---------------------------------------------------------------------


def _blank_profile(row: Row) -> None:
    row["external_id"] = None
    row["aliases"] = {}
    row["tags"] = {}
    row["properties"] = dict(_BLANK_PROPERTIES)
    row["purchases"] = []
    row["subscriptions"] = {}


def _user_created(row: Row, p: Row) -> None:
    row["app_id"] = p["app_id"]
    _blank_profile(row)
    row["merged_into"] = None
    row["deleted"] = False


def _external_id_set(row: Row, p: Row) -> None:
    row["external_id"] = p["external_id"]


def _external_id_removed(row: Row, _p: Row) -> None:
    row["external_id"] = None


def _alias_added(row: Row, p: Row) -> None:
    row["aliases"][p["label"]] = p["alias_id"]


def _alias_removed(row: Row, p: Row) -> None:
    del row["aliases"][p["label"]]


def _tags_changed(row: Row, p: Row) -> None:
    tags = row["tags"]
    tags.update(p["assigned"])
    for key in p["removed"]:
        tags.pop(key, None)


def _properties_changed(row: Row, p: Row) -> None:
    row["properties"] = {
        **row["properties"],
        **{k: v for k, v in p["changes"].items() if v is not None},
    }


def _purchase_recorded(row: Row, p: Row) -> None:
    row["purchases"].append(dict(p["purchase"]))


def _subscription_attached(row: Row, p: Row) -> None:
    row["subscriptions"][p["subscription_id"]] = p["subscription_type"]


def _subscription_detached(row: Row, p: Row) -> None:
    try:
        del row["subscriptions"][p["subscription_id"]]
    except KeyError:
        raise KeyError(UUID(p["subscription_id"])) from None  # as the domain's apply says it


def _merged_into(row: Row, p: Row) -> None:
    row["merged_into"] = p["survivor_id"]


def _user_deleted(row: Row, _p: Row) -> None:
    row["deleted"] = True
    row["external_id"] = None
    row["aliases"] = {}
    row["subscriptions"] = {}


def _user_erased(row: Row, _p: Row) -> None:
    row["deleted"] = True
    _blank_profile(row)


# --- subscriptions ---------------------------------------------------------------


def _subscription_created(row: Row, p: Row) -> None:
    spec = p["spec"]
    row["app_id"] = p["app_id"]
    for name in ("type", "token", "enabled", "notification_types", "web_auth", "web_p256"):
        row[name] = spec[name]
    row["device"] = dict(spec["device"])
    row["owner_id"] = p["owner_id"]
    row["session_count"] = 0
    row["session_time"] = 0
    row["last_active"] = None
    row["deleted"] = False


def _owner_changed(row: Row, p: Row) -> None:
    row["owner_id"] = p["owner_id"]


def _session_recorded(row: Row, p: Row) -> None:
    row["session_count"] += 1
    row["session_time"] += p["session_time"]
    if later(p["active_at"], row["last_active"]):
        row["last_active"] = p["active_at"]


def _subscription_updated(row: Row, p: Row) -> None:
    change = p["change"]
    for name in ("token", "notification_types", "web_auth", "web_p256"):
        if change[name] is not None:
            row[name] = change[name]
    reported = {k: v for k, v in change["device"].items() if v is not None}
    if reported:
        row["device"] = {**row["device"], **reported}


def _subscription_disabled(row: Row, _p: Row) -> None:
    row["enabled"] = False


def _subscription_enabled(row: Row, _p: Row) -> None:
    row["enabled"] = True


def _subscription_deleted(row: Row, _p: Row) -> None:
    row["deleted"] = True
    row["owner_id"] = None


class Mutator(NamedTuple):
    kind: str  # USER or SUBSCRIPTION
    event_name: str  # the domain class's name, for the same errors as ``mutate``
    creates: bool
    apply: Callable[[Row, Row], None] | None  # None: no row form, the domain applies it
    personal: bool  # reads personal values (sealed in the log)


def _m(event_class: type[Any], apply: Callable[[Row, Row], None], personal: bool = False) -> Any:
    kind = USER if event_class.aggregate_class() is user.User else SUBSCRIPTION
    creates = event_class in (user.UserCreated, sub.SubscriptionCreated)
    return event_class.TOPIC, Mutator(kind, event_class.__name__, creates, apply, personal)


MUTATORS: dict[str, Mutator] = dict(
    [
        _m(user.UserCreated, _user_created),
        _m(user.ExternalIdSet, _external_id_set, personal=True),
        _m(user.ExternalIdRemoved, _external_id_removed),
        _m(user.AliasAdded, _alias_added, personal=True),
        _m(user.AliasRemoved, _alias_removed),
        _m(user.TagsChanged, _tags_changed, personal=True),
        _m(user.PropertiesChanged, _properties_changed, personal=True),
        _m(user.PurchaseRecorded, _purchase_recorded, personal=True),
        _m(user.SubscriptionAttached, _subscription_attached),
        _m(user.SubscriptionDetached, _subscription_detached),
        _m(user.MergedInto, _merged_into),
        _m(user.UserDeleted, _user_deleted),
        _m(user.UserErased, _user_erased),
        _m(sub.SubscriptionCreated, _subscription_created, personal=True),
        _m(sub.OwnerChanged, _owner_changed),
        _m(sub.SessionRecorded, _session_recorded),
        _m(sub.SubscriptionUpdated, _subscription_updated, personal=True),
        _m(sub.SubscriptionDisabled, _subscription_disabled),
        _m(sub.SubscriptionEnabled, _subscription_enabled),
        _m(sub.SubscriptionDeleted, _subscription_deleted),
    ]
)
_FIELDS = {USER: tuple(UserState.model_fields), SUBSCRIPTION: tuple(SubscriptionState.model_fields)}
_AGGREGATES: dict[type[Any], str] = {user.User: USER, sub.Subscription: SUBSCRIPTION}
_JSON: dict[str, tuple[Callable[[Any], str], Callable[[str], Any]]] = {
    USER: (user_to_json, user_from_json),
    SUBSCRIPTION: (subscription_to_json, subscription_from_json),
}


@cache
def mutator_for(topic: str) -> Mutator | None:
    """How events of ``topic`` change a row; ``None`` for events of neither aggregate.
    An event class of theirs without a row form (yet) is applied by the domain."""
    if topic in MUTATORS:
        return MUTATORS[topic]
    try:
        event_class = resolve_topic(topic)
    except Exception:  # unknown: the log reader dead-letters it
        return None
    if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
        return None
    kind = _AGGREGATES.get(event_class.aggregate_class())  # type: ignore[arg-type]
    if kind is None:
        return None
    creates = issubclass(event_class, CreationEvent)
    return Mutator(kind, event_class.__name__, creates, None, personal=True)


def _by_the_domain(row: Row | None, record: Recorded, kind: str) -> Row:
    """The domain's own ``mutate`` on the aggregate the row holds."""
    event_class: Any = resolve_topic(record.topic)
    event = event_class.model_validate(
        {**record.opened(), "originator_id": record.originator_id,
         "originator_version": record.originator_version}
    )  # fmt: skip
    to_json, from_json = _JSON[kind]
    aggregate = event.mutate(None if row is None else from_json(dumps(row)))
    return loads(to_json(aggregate))


def fold(row: Row | None, record: Recorded, mutator: Mutator) -> Row:
    """``record`` applied to ``row`` (``None``: no such aggregate yet), as
    ``DomainEvent.mutate`` applies an event to an aggregate."""
    if mutator.apply is None:
        return _by_the_domain(row, record, mutator.kind)
    version, at = record.originator_version, record.state["timestamp"]
    if mutator.creates:
        if row is not None:
            raise EventOrderError(f"{mutator.event_name} applied to an existing aggregate")
        if version != 1:
            raise EventOrderError("a creation event must be version 1")
        created: Row = dict.fromkeys(_FIELDS[mutator.kind])  # the pydantic model's key order
        created.update(id=record.originator_id, version=1, created_on=at, modified_on=at)
        mutator.apply(created, record.state)
        return created
    if row is None:
        raise EventOrderError(f"{mutator.event_name} needs an existing aggregate")
    if version != row["version"] + 1:
        raise EventOrderError(f"event version {version} after {row['version']}")
    mutator.apply(row, record.state)
    row["version"] = version
    row["modified_on"] = at
    return row
