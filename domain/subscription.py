"""The Subscription aggregate: one channel (a device's push token, an email
address, a phone number) and the history of who owned it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field

from idledger.domain.base import Aggregate, CreationEvent, DomainEvent
from idledger.domain.errors import SubscriptionNotFound
from idledger.domain.sealing import ERASED
from idledger.domain.snapshot import AggregateSnapshot
from idledger.domain.values import (
    DeviceInfo,
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
    SubscriptionUpdate,
)


class Subscription(Aggregate):
    app_id: UUID
    type: SubscriptionType
    token: str | None
    enabled: bool
    notification_types: int | None
    web_auth: str | None
    web_p256: str | None
    device: DeviceInfo
    owner_id: UUID | None
    session_count: int
    session_time: int
    last_active: datetime | None
    deleted: bool

    @classmethod
    def create(
        cls, app_id: UUID, spec: SubscriptionSpec, owner_id: UUID, cause: OwnershipCause,
        at: datetime,
    ) -> Subscription:  # fmt: skip
        return cls._start(
            SubscriptionCreated(
                originator_id=uuid4(), originator_version=1, timestamp=at, app_id=app_id,
                spec=spec, owner_id=owner_id, cause=cause,
            )
        )  # fmt: skip

    @property
    def recency(self) -> datetime:
        """When it was last seen alive: its last session, else its creation."""
        return self.last_active or self.created_on

    def require_live(self) -> None:
        if self.deleted:
            raise SubscriptionNotFound(self.id)

    def change_owner(self, new_owner_id: UUID, cause: OwnershipCause, at: datetime) -> None:
        if new_owner_id != self.owner_id:
            self._trigger(
                OwnerChanged(
                    **self._next(at), previous_owner_id=self.owner_id, owner_id=new_owner_id,
                    cause=cause,
                )
            )  # fmt: skip

    def record_session(
        self, session_time: int, at: datetime, active_at: datetime | None = None
    ) -> None:
        """A session at ``active_at`` (default: now), recorded at ``at``; a late
        ping or an imported history may be for an earlier moment."""
        self._trigger(
            SessionRecorded(**self._next(at), session_time=session_time, active_at=active_at or at)
        )

    def update(self, change: SubscriptionUpdate, at: datetime) -> None:
        if change.enabled is False and self.enabled:
            self._trigger(SubscriptionDisabled(**self._next(at)))
        elif change.enabled is True and not self.enabled:
            self._trigger(SubscriptionEnabled(**self._next(at)))
        fields = change.model_dump(exclude={"enabled", "device"}, exclude_none=True)
        changed = {k: v for k, v in fields.items() if getattr(self, k) != v}
        device = self.device.merged(change.device)
        if changed or device != self.device:
            self._trigger(
                SubscriptionUpdated(
                    **self._next(at), change=SubscriptionUpdate(**changed, device=change.device)
                )
            )

    def delete(self, at: datetime) -> None:
        self._trigger(SubscriptionDeleted(**self._next(at), owner_id=self.owner_id))


class SubscriptionCreated(CreationEvent[Subscription]):
    TOPIC = "idledger.subscription:Created"
    MAKES_SUBJECT_KEY: ClassVar[bool] = True  # the subscription's data key is made with it
    PERSONAL: ClassVar[dict[str, Any]] = {
        f"spec.{name}": ERASED
        for name in ("token", "web_auth", "web_p256", "device.installation_id")
    }

    app_id: UUID
    spec: SubscriptionSpec
    owner_id: UUID
    cause: OwnershipCause

    def blank(self) -> Subscription:
        return Subscription.__new__(Subscription)

    def apply(self, aggregate: Subscription) -> None:
        aggregate.app_id = self.app_id
        aggregate.type = self.spec.type
        aggregate.token = self.spec.token
        aggregate.enabled = self.spec.enabled
        aggregate.notification_types = self.spec.notification_types
        aggregate.web_auth = self.spec.web_auth
        aggregate.web_p256 = self.spec.web_p256
        aggregate.device = self.spec.device
        aggregate.owner_id = self.owner_id
        aggregate.session_count = 0
        aggregate.session_time = 0
        aggregate.last_active = None
        aggregate.deleted = False


class OwnerChanged(DomainEvent[Subscription]):
    TOPIC = "idledger.subscription:OwnerChanged"

    previous_owner_id: UUID | None
    owner_id: UUID
    cause: OwnershipCause

    def apply(self, aggregate: Subscription) -> None:
        aggregate.owner_id = self.owner_id


class SessionRecorded(DomainEvent[Subscription]):
    """A session that happened at ``active_at``: the basis of monthly active users."""

    TOPIC = "idledger.subscription:SessionRecorded"

    session_time: int = Field(default=0, ge=0, le=86_400 * 366)
    active_at: AwareDatetime

    def apply(self, aggregate: Subscription) -> None:
        aggregate.session_count += 1
        aggregate.session_time += self.session_time
        if aggregate.last_active is None or self.active_at > aggregate.last_active:
            aggregate.last_active = self.active_at


class SubscriptionUpdated(DomainEvent[Subscription]):
    TOPIC = "idledger.subscription:Updated"
    PERSONAL: ClassVar[dict[str, Any]] = {
        f"change.{name}": ERASED
        for name in ("token", "web_auth", "web_p256", "device.installation_id")
    }

    change: SubscriptionUpdate

    def apply(self, aggregate: Subscription) -> None:
        for name, value in self.change.model_dump(
            exclude={"enabled", "device"}, exclude_none=True
        ).items():
            setattr(aggregate, name, value)
        aggregate.device = aggregate.device.merged(self.change.device)


class SubscriptionDisabled(DomainEvent[Subscription]):
    TOPIC = "idledger.subscription:Disabled"

    def apply(self, aggregate: Subscription) -> None:
        aggregate.enabled = False


class SubscriptionEnabled(DomainEvent[Subscription]):
    TOPIC = "idledger.subscription:Enabled"

    def apply(self, aggregate: Subscription) -> None:
        aggregate.enabled = True


class SubscriptionDeleted(DomainEvent[Subscription]):
    TOPIC = "idledger.subscription:Deleted"

    owner_id: UUID | None

    def apply(self, aggregate: Subscription) -> None:
        aggregate.deleted = True
        aggregate.owner_id = None


class SubscriptionSnapshot(AggregateSnapshot):
    TOPIC = "idledger.subscription:Snapshot"
    aggregate_class = Subscription
