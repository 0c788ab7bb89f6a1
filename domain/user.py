"""The User aggregate: one person (or one anonymous device) within an app."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import Field

from idledger.domain.base import Aggregate, CreationEvent, DomainEvent
from idledger.domain.errors import AliasNotFound, InvalidValue, UserNotFound, UserRetired
from idledger.domain.sealing import ERASED, ERASED_ID
from idledger.domain.snapshot import AggregateSnapshot
from idledger.domain.values import (
    MAX_CUSTOM_ALIASES,
    OwnershipCause,
    Purchase,
    SubscriptionType,
    UserProperties,
    check_alias,
    check_external_id,
    check_tag,
)


class User(Aggregate):
    app_id: UUID
    external_id: str | None
    aliases: dict[str, str]
    tags: dict[str, str]
    properties: UserProperties
    purchases: list[Purchase]
    # Kept here (and on each subscription) so the limit of 20 and "left with
    # nothing" are decided inside this aggregate's consistency boundary.
    subscriptions: dict[UUID, SubscriptionType]
    merged_into: UUID | None
    deleted: bool

    @classmethod
    def create(cls, app_id: UUID, at: datetime, cause: OwnershipCause = OwnershipCause.API) -> User:
        return cls._start(
            UserCreated(
                originator_id=uuid4(), originator_version=1, timestamp=at, app_id=app_id,
                cause=cause,
            )
        )  # fmt: skip

    @property
    def is_anonymous(self) -> bool:
        return self.external_id is None

    @property
    def is_live(self) -> bool:
        return not self.deleted and self.merged_into is None

    @property
    def holds_nothing(self) -> bool:
        """OneSignal deletes a user with neither subscription nor alias."""
        return not self.subscriptions and not self.aliases and self.external_id is None

    def require_live(self) -> None:
        if self.merged_into is not None:
            raise UserRetired(self.id, self.merged_into)
        if self.deleted:
            raise UserNotFound(self.id)

    def set_external_id(self, external_id: str, at: datetime) -> None:
        check_external_id(external_id)
        if external_id != self.external_id:
            self._trigger(
                ExternalIdSet(**self._next(at), external_id=external_id, replaced=self.external_id)
            )

    def remove_external_id(self, at: datetime) -> None:
        if self.external_id is None:
            raise AliasNotFound("external_id")
        self._trigger(ExternalIdRemoved(**self._next(at), external_id=self.external_id))

    def add_alias(self, label: str, alias_id: str, at: datetime) -> None:
        check_alias(label, alias_id)
        if label not in self.aliases and len(self.aliases) >= MAX_CUSTOM_ALIASES:
            raise InvalidValue("identity", f"a user has at most {MAX_CUSTOM_ALIASES} aliases")
        if self.aliases.get(label) != alias_id:
            replaced = self.aliases.get(label)
            self._trigger(
                AliasAdded(**self._next(at), label=label, alias_id=alias_id, replaced=replaced)
            )

    def remove_alias(self, label: str, at: datetime) -> None:
        if label not in self.aliases:
            raise AliasNotFound(label)
        self._trigger(AliasRemoved(**self._next(at), label=label, alias_id=self.aliases[label]))

    def change_tags(self, tags: dict[str, str], at: datetime) -> None:
        """Set tags; an empty value deletes the tag, as in OneSignal."""
        for key, value in tags.items():
            check_tag(key, value)
        to_set = {k: v for k, v in tags.items() if v != "" and self.tags.get(k) != v}
        to_remove = sorted(k for k, v in tags.items() if v == "" and k in self.tags)
        if to_set or to_remove:
            self._trigger(TagsChanged(**self._next(at), assigned=to_set, removed=to_remove))

    def change_properties(self, properties: UserProperties, at: datetime) -> None:
        current = self.properties.given()
        changed = {k: v for k, v in properties.given().items() if current.get(k) != v}
        if changed:
            self._trigger(
                PropertiesChanged(**self._next(at), changes=UserProperties.model_validate(changed))
            )

    def record_purchase(self, purchase: Purchase, at: datetime) -> None:
        self._trigger(PurchaseRecorded(**self._next(at), purchase=purchase))

    def attach(self, subscription_id: UUID, kind: SubscriptionType, at: datetime) -> None:
        if subscription_id not in self.subscriptions:
            self._trigger(
                SubscriptionAttached(
                    **self._next(at), subscription_id=subscription_id, subscription_type=kind
                )
            )

    def detach(self, subscription_id: UUID, at: datetime) -> None:
        if subscription_id in self.subscriptions:
            self._trigger(SubscriptionDetached(**self._next(at), subscription_id=subscription_id))

    def merge_into(self, survivor_id: UUID, at: datetime) -> None:
        assert self.holds_nothing
        assert survivor_id != self.id
        self._trigger(MergedInto(**self._next(at), survivor_id=survivor_id))

    def delete(self, at: datetime) -> None:
        self._trigger(UserDeleted(**self._next(at)))

    def erase(self, subscriptions: list[UUID], at: datetime) -> None:
        self._trigger(UserErased(**self._next(at), subscriptions=subscriptions))


def _blank_profile(user: User) -> None:
    """No identity, data or subscriptions: a new user, or an erased one."""
    user.external_id = None
    user.aliases = {}
    user.tags = {}
    user.properties = UserProperties()
    user.purchases = []
    user.subscriptions = {}


class UserCreated(CreationEvent[User]):
    TOPIC = "idledger.user:Created"
    MAKES_SUBJECT_KEY: ClassVar[bool] = True  # the user's data key is made with it

    app_id: UUID
    cause: OwnershipCause

    def blank(self) -> User:
        return User.__new__(User)

    def apply(self, aggregate: User) -> None:
        aggregate.app_id = self.app_id
        _blank_profile(aggregate)
        aggregate.merged_into = None
        aggregate.deleted = False


class ExternalIdSet(DomainEvent[User]):
    TOPIC = "idledger.user:ExternalIdSet"
    PERSONAL: ClassVar[dict[str, Any]] = {"external_id": ERASED_ID, "replaced": ERASED_ID}

    external_id: str
    replaced: str | None

    def apply(self, aggregate: User) -> None:
        aggregate.external_id = self.external_id


class ExternalIdRemoved(DomainEvent[User]):
    TOPIC = "idledger.user:ExternalIdRemoved"
    PERSONAL: ClassVar[dict[str, Any]] = {"external_id": ERASED_ID}

    external_id: str

    def apply(self, aggregate: User) -> None:
        aggregate.external_id = None


class AliasAdded(DomainEvent[User]):
    TOPIC = "idledger.user:AliasAdded"
    PERSONAL: ClassVar[dict[str, Any]] = {"alias_id": ERASED_ID, "replaced": ERASED_ID}

    label: str
    alias_id: str
    replaced: str | None

    def apply(self, aggregate: User) -> None:
        aggregate.aliases[self.label] = self.alias_id


class AliasRemoved(DomainEvent[User]):
    TOPIC = "idledger.user:AliasRemoved"
    PERSONAL: ClassVar[dict[str, Any]] = {"alias_id": ERASED_ID}

    label: str
    alias_id: str

    def apply(self, aggregate: User) -> None:
        del aggregate.aliases[self.label]


class TagsChanged(DomainEvent[User]):
    TOPIC = "idledger.user:TagsChanged"
    PERSONAL: ClassVar[dict[str, Any]] = {"assigned.*": ERASED}

    assigned: dict[str, str]
    removed: list[str]

    def apply(self, aggregate: User) -> None:
        aggregate.tags.update(self.assigned)
        for key in self.removed:
            aggregate.tags.pop(key, None)


class PropertiesChanged(DomainEvent[User]):
    TOPIC = "idledger.user:PropertiesChanged"
    PERSONAL: ClassVar[dict[str, Any]] = {
        f"changes.{name}": None
        for name in ("language", "timezone_id", "country", "lat", "long", "ip")
    }

    changes: UserProperties

    def apply(self, aggregate: User) -> None:
        aggregate.properties = aggregate.properties.model_copy(update=self.changes.given())


class PurchaseRecorded(DomainEvent[User]):
    TOPIC = "idledger.user:PurchaseRecorded"
    PERSONAL: ClassVar[dict[str, Any]] = {
        "purchase.sku": ERASED, "purchase.amount": "0", "purchase.iso": "XXX",
    }  # fmt: skip

    purchase: Purchase

    def apply(self, aggregate: User) -> None:
        aggregate.purchases.append(self.purchase)


class SubscriptionAttached(DomainEvent[User]):
    TOPIC = "idledger.user:SubscriptionAttached"

    subscription_id: UUID
    subscription_type: SubscriptionType

    def apply(self, aggregate: User) -> None:
        aggregate.subscriptions[self.subscription_id] = self.subscription_type


class SubscriptionDetached(DomainEvent[User]):
    TOPIC = "idledger.user:SubscriptionDetached"

    subscription_id: UUID

    def apply(self, aggregate: User) -> None:
        del aggregate.subscriptions[self.subscription_id]


class MergedInto(DomainEvent[User]):
    """This anonymous user was retired at login; ``survivor_id`` carries on."""

    TOPIC = "idledger.user:MergedInto"

    survivor_id: UUID

    def apply(self, aggregate: User) -> None:
        aggregate.merged_into = self.survivor_id


class UserDeleted(DomainEvent[User]):
    TOPIC = "idledger.user:Deleted"

    reason: str = Field(default="api", max_length=100)

    def apply(self, aggregate: User) -> None:
        aggregate.deleted = True
        aggregate.external_id = None
        aggregate.aliases = {}
        aggregate.subscriptions = {}


class UserErased(DomainEvent[User]):
    """The person was forgotten: their data keys (the user's and those of the
    subscriptions they held at the end) were destroyed with this event."""

    TOPIC = "idledger.user:Erased"

    subscriptions: list[UUID]

    def apply(self, aggregate: User) -> None:
        aggregate.deleted = True
        _blank_profile(aggregate)


class UserSnapshot(AggregateSnapshot):
    TOPIC = "idledger.user:Snapshot"
    aggregate_class = User
