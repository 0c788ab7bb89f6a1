"""Point in time, folded from the event log alone: the ground truth that the
read models are checked against.

A read as of ``at`` finds the aggregate's version at ``at`` by binary search, then
folds the events after the newest snapshot at or before that version, so its cost
hardly grows with the aggregate's history. Snapshots are optional: without them
the same fold starts at the first event and gives the same answer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import StoredEvent

from idledger.domain.base import Aggregate, DomainEvent
from idledger.domain.errors import SubscriptionNotFound, UserNotFound
from idledger.domain.subscription import (
    OwnerChanged,
    Subscription,
    SubscriptionCreated,
    SubscriptionDeleted,
)
from idledger.domain.user import User
from idledger.domain.values import OwnershipCause


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


def version_at(store: Application[UUID], aggregate_id: UUID, at: datetime) -> int:
    """The aggregate's version at ``at``: 0 before its first event (or if none).

    Event times never go backwards within an aggregate (``Aggregate._next``), so a
    binary search over versions finds it in O(log n) reads of a single event.
    """
    newest = store.recorder.select_events(aggregate_id, desc=True, limit=1)
    if not newest:
        return 0
    high = newest[0].originator_version
    if _timestamp(store, newest[0]) <= at:
        return high
    low = 0  # invariant: version ``low`` is at or before ``at``, ``high`` after it
    while high - low > 1:
        middle = (low + high) // 2
        (event,) = store.recorder.select_events(aggregate_id, gt=middle - 1, lte=middle, limit=1)
        if _timestamp(store, event) <= at:
            low = middle
        else:
            high = middle
    return low


def fold_until(
    store: Application[UUID], aggregate_id: UUID, at: datetime | None = None
) -> Aggregate | None:
    """The aggregate folded from its events up to ``at`` (all of them if ``None``):
    from the newest snapshot at or before that version, when there is one."""
    version = None if at is None else version_at(store, aggregate_id, at)
    if version == 0:
        return None
    try:
        return cast("Aggregate", store.repository.get(aggregate_id, version=version))
    except AggregateNotFoundError:
        return None


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
    """Who owned the subscription at ``at`` (``None`` before creation or after deletion):
    the owner in its state at ``at``, which matches ``ownership_timeline``."""
    subscription = fold_until(store, subscription_id, at)
    if subscription is None:
        first = list(store.events.get(subscription_id, lte=1))
        if not (first and isinstance(first[0], SubscriptionCreated)):
            raise SubscriptionNotFound(subscription_id)
        return None  # not created yet
    if not isinstance(subscription, Subscription):
        raise SubscriptionNotFound(subscription_id)
    return subscription.owner_id  # None once deleted


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


def _timestamp(store: Application[UUID], stored: StoredEvent) -> datetime:
    return cast("DomainEvent[Any]", store.mapper.to_domain_event(stored)).timestamp
