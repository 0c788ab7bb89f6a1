"""Point in time, folded from the event log alone: the ground truth that the
read models are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import Application

from domain.base import Aggregate, DomainEvent
from domain.errors import SubscriptionNotFound, UserNotFound
from domain.subscription import OwnerChanged, SubscriptionCreated, SubscriptionDeleted
from domain.user import User
from domain.values import OwnershipCause


@dataclass(frozen=True)
class OwnershipInterval:
    """``owner_id`` owned the subscription from ``start`` (inclusive) to ``end``
    (exclusive; ``None`` while it still does)."""

    owner_id: UUID
    start: datetime
    end: datetime | None
    cause: OwnershipCause
    ended_by: str | None  # the next owner's cause, or "deleted"

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


def events_of(store: Application[UUID], aggregate_id: UUID) -> Iterator[DomainEvent[Any]]:
    return cast("Iterator[DomainEvent[Any]]", iter(store.events.get(aggregate_id)))


def fold_until(
    store: Application[UUID], aggregate_id: UUID, at: datetime | None = None
) -> Aggregate | None:
    """The aggregate folded from its events up to ``at`` (all of them if ``None``)."""
    aggregate: Aggregate | None = None
    for event in events_of(store, aggregate_id):
        if at is not None and event.timestamp > at:
            break  # event times are monotonic within an aggregate
        aggregate = event.mutate(aggregate)
    return aggregate


def user_as_of(store: Application[UUID], user_id: UUID, at: datetime) -> User | None:
    """The user as it stood at ``at``; ``None`` if it did not exist yet."""
    user = fold_until(store, user_id, at)
    if user is not None and not isinstance(user, User):
        raise UserNotFound(user_id)
    return user


def ownership_timeline(store: Application[UUID], subscription_id: UUID) -> list[OwnershipInterval]:
    intervals: list[OwnershipInterval] = []
    for event in events_of(store, subscription_id):
        if isinstance(event, SubscriptionCreated | OwnerChanged):
            _close(intervals, event.timestamp, event.cause)
            intervals.append(
                OwnershipInterval(event.owner_id, event.timestamp, None, event.cause, None)
            )
        elif isinstance(event, SubscriptionDeleted):
            _close(intervals, event.timestamp, "deleted")
    if not intervals:
        raise SubscriptionNotFound(subscription_id)
    return intervals


def owner_of(store: Application[UUID], subscription_id: UUID, at: datetime) -> UUID | None:
    """Who owned the subscription at ``at`` (``None`` before creation or after deletion)."""
    for interval in ownership_timeline(store, subscription_id):
        if interval.covers(at):
            return interval.owner_id
    return None


def survivor_of(store: Application[UUID], user_id: UUID) -> UUID:
    """Follow retirements (merges at login) to the user who carries on."""
    seen = {user_id}
    current = user_id
    while True:
        user = fold_until(store, current)
        if not isinstance(user, User):
            raise UserNotFound(current)
        if user.merged_into is None or user.merged_into in seen:
            return current
        current = user.merged_into
        seen.add(current)


def _close(intervals: list[OwnershipInterval], at: datetime, ended_by: str) -> None:
    if intervals and intervals[-1].end is None:
        last = intervals[-1]
        intervals[-1] = OwnershipInterval(last.owner_id, last.start, at, last.cause, ended_by)
