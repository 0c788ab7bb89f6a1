"""Point-in-time views for operators, folded from the log alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from idledger.domain import history
from idledger.domain.base import DomainEvent
from idledger.domain.errors import UserNotFound
from idledger.domain.history import OwnershipInterval
from idledger.domain.mapper import event_state
from idledger.domain.service import LedgerLog
from idledger.domain.user import User


@dataclass(frozen=True)
class SubscriptionAudit:
    subscription_id: UUID
    at: datetime | None
    owner_id: UUID | None
    timeline: list[OwnershipInterval]

    def as_json(self) -> dict[str, Any]:
        return {
            "subscription_id": str(self.subscription_id),
            "at": self.at.isoformat() if self.at else None,
            "owner_id": str(self.owner_id) if self.owner_id else None,
            "timeline": [
                {
                    "owner_id": str(i.owner_id), "start": i.start.isoformat(),
                    "end": i.end.isoformat() if i.end else None, "cause": str(i.cause),
                    "ended_by": i.ended_by,
                }
                for i in self.timeline
            ],
        }  # fmt: skip


@dataclass(frozen=True)
class UserAudit:
    user_id: UUID
    at: datetime | None
    user: User | None
    survivor_id: UUID
    events: list[DomainEvent[Any]]

    def as_json(self) -> dict[str, Any]:
        user = self.user
        return {
            "onesignal_id": str(self.user_id),
            "at": self.at.isoformat() if self.at else None,
            "survivor_id": str(self.survivor_id),
            "state": None if user is None else {
                "status": "retired" if user.merged_into else "deleted" if user.deleted else "live",
                "external_id": user.external_id, "aliases": user.aliases, "tags": user.tags,
                "subscriptions": sorted(str(s) for s in user.subscriptions),
            },
            "events": [event_json(e) for e in self.events],
        }  # fmt: skip


def event_json(event: DomainEvent[Any]) -> dict[str, Any]:
    return {"version": event.originator_version, "type": event.TOPIC, **event_state(event)}


def audit_subscription(
    log: LedgerLog, subscription_id: UUID, at: datetime | None = None
) -> SubscriptionAudit:
    timeline = history.ownership_timeline(log, subscription_id)
    owner = history.owner_of(log, subscription_id, at) if at else None
    return SubscriptionAudit(subscription_id, at, owner, timeline)


def audit_user(log: LedgerLog, user_id: UUID, at: datetime | None = None) -> UserAudit:
    events = [e for e in history.events_of(log, user_id) if at is None or e.timestamp <= at]
    if not events and at is None:
        raise UserNotFound(user_id)
    user = history.user_as_of(log, user_id, at) if at else history.fold_until(log, user_id)
    assert user is None or isinstance(user, User)
    return UserAudit(user_id, at, user, history.survivor_of(log, user_id), events)
