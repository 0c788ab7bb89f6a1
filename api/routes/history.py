"""idledger endpoints beyond OneSignal: ownership history, users as of an
instant and their events, and rolling 30-day MAU."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel

from idledger.api import examples as ex
from idledger.api.convert import identity_of, properties_of
from idledger.api.deps import AppId, ReaderDep, RuntimeDep
from idledger.api.errors import ApiError
from idledger.api.openapi_docs import errors, merge
from idledger.api.routes.common import KEYED, PATH
from idledger.api.routes.subscriptions import subscription_uuid
from idledger.api.runtime import Runtime
from idledger.api.schemas import PropertiesOut
from idledger.domain.base import DomainEvent
from idledger.domain.errors import SubscriptionNotFound, UserNotFound
from idledger.domain.history import OwnershipInterval, events_of
from idledger.domain.mapper import event_state

router = APIRouter(prefix="/apps/{app_id}/idledger", tags=["idledger"])
MAX_MAU_DAYS = 3660
At = Annotated[AwareDatetime | None, Query(description="ISO 8601 instant with a zone")]


class Interval(BaseModel):
    owner_id: UUID
    start: datetime
    end: datetime | None
    cause: str
    ended_by: str | None


class Ownership(BaseModel):
    subscription_id: UUID
    at: datetime | None = None
    owner_id: UUID | None = None
    intervals: list[Interval] = []


class UserAsOf(BaseModel):
    onesignal_id: UUID
    at: datetime
    status: str  # live, retired or deleted
    merged_into: UUID | None
    survivor_id: UUID
    identity: dict[str, str]
    properties: PropertiesOut
    subscription_ids: list[UUID]


class EventOut(BaseModel):
    version: int
    type: str
    timestamp: datetime
    actor: str
    data: dict[str, Any]


class EventPage(BaseModel):
    onesignal_id: UUID
    events: list[EventOut]
    next_after: int | None


class MauDay(BaseModel):
    day: date
    total: int
    by_type: dict[str, int]


class Mau(BaseModel):
    app_id: UUID
    window_days: int = 30
    days: list[MauDay]


def _interval(interval: OwnershipInterval) -> Interval:
    return Interval(**interval.__dict__)


@router.get(
    "/subscriptions/{subscription_id}/ownership",
    response_model=Ownership,
    responses=merge(
        {200: ex.TIMELINE},
        errors(*KEYED, *PATH, ex.INVALID_QUERY, ex.SUBSCRIPTION_NOT_FOUND),
    ),
)
def ownership(subscription_id: str, app_id: AppId, runtime: ReaderDep, at: At = None) -> Ownership:
    """The ownership timeline with causes, or (with ``at``) the owner at that instant."""
    sid = subscription_uuid(subscription_id)
    intervals = runtime.models.ownership.timeline(app_id, sid)
    if not intervals:
        raise SubscriptionNotFound(sid)
    if at is None:
        return Ownership(subscription_id=sid, intervals=[_interval(i) for i in intervals])
    owner = runtime.models.ownership.owner_of(app_id, sid, at)
    return Ownership(subscription_id=sid, at=at, owner_id=owner)


def user_of_app(runtime: Runtime, app_id: UUID, onesignal_id: str) -> UUID:
    """A user id of this app, whatever its state (deleted, retired, erased): as the log
    has it. Another app's id is not found, as an unknown one."""
    try:
        user_id = UUID(onesignal_id)
    except ValueError:
        raise UserNotFound(onesignal_id) from None
    first = next(events_of(runtime.ledger, user_id), None)
    if first is None or getattr(first, "app_id", None) != app_id:
        raise UserNotFound(user_id)
    return user_id


@router.get(
    "/users/{onesignal_id}/as_of",
    response_model=UserAsOf,
    responses=merge({200: ex.AS_OF}, errors(*KEYED, ex.INVALID_QUERY, ex.USER_NOT_FOUND)),
)
def user_as_of(onesignal_id: str, app_id: AppId, runtime: RuntimeDep, at: At = None) -> UserAsOf:
    """The user as it stood at ``at`` (default: now), folded from the log; retired
    and deleted users are shown too, with the survivor of a merge."""
    user_id = user_of_app(runtime, app_id, onesignal_id)
    return user_as_of_body(runtime, user_id, at or datetime.now(UTC))


def user_as_of_body(runtime: Runtime, user_id: UUID, moment: datetime) -> UserAsOf:
    """The user as of ``moment``, folded from the log (the console shows the same)."""
    user = runtime.ledger.user_as_of(user_id, moment)
    if user is None:
        raise UserNotFound(f"{user_id} at {moment.isoformat()}")
    status = "retired" if user.merged_into else "deleted" if user.deleted else "live"
    return UserAsOf(
        onesignal_id=user_id, at=moment, status=status, merged_into=user.merged_into,
        survivor_id=runtime.ledger.survivor_of(user_id), identity=identity_of(user),
        properties=properties_of(user), subscription_ids=sorted(user.subscriptions, key=str),
    )  # fmt: skip


@router.get(
    "/users/{onesignal_id}/events",
    response_model=EventPage,
    responses=merge({200: ex.EVENTS}, errors(*KEYED, ex.INVALID_QUERY, ex.USER_NOT_FOUND)),
)
def user_events(
    onesignal_id: str,
    app_id: AppId,
    runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, description="Return events after this version")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventPage:
    """The user's event history, oldest first, a page at a time."""
    user_id = user_of_app(runtime, app_id, onesignal_id)
    page = list(runtime.ledger.events.get(user_id, gt=after or None, limit=limit + 1))
    events = [event_out(event) for event in page[:limit]]  # type: ignore[arg-type]
    more = len(page) > limit
    return EventPage(
        onesignal_id=user_id, events=events, next_after=events[-1].version if more else None
    )


def event_out(event: DomainEvent[Any]) -> EventOut:
    data = event_state(event)
    for header in ("timestamp", "actor", "schema_version"):
        data.pop(header, None)
    return EventOut(
        version=event.originator_version, type=event.TOPIC, timestamp=event.timestamp,
        actor=event.actor, data=data,
    )  # fmt: skip


@router.get(
    "/mau", response_model=Mau, responses=merge({200: ex.MAU}, errors(*KEYED, ex.INVALID_QUERY))
)
def mau(
    app_id: AppId,
    runtime: ReaderDep,
    day: Annotated[date | None, Query(description="One day (default: today, UTC)")] = None,
    first: Annotated[date | None, Query(alias="from", description="First day of a range")] = None,
    last: Annotated[date | None, Query(alias="to", description="Last day of a range")] = None,
) -> Mau:
    """Rolling 30-day monthly active users (mobile push subscriptions) per day."""
    if (first is None) != (last is None) or (day is not None and first is not None):
        raise ApiError(400, "invalid-value", "give either day, or both from and to", "day")
    first = first or day or datetime.now(UTC).date()
    return Mau(app_id=app_id, days=mau_days(runtime, app_id, first, last or first))


def mau_days(runtime: Runtime, app_id: UUID, first: date, last: date) -> list[MauDay]:
    """Each day of ``first``..``last`` with its rolling 30-day MAU (the console's too)."""
    if last < first or (last - first).days >= MAX_MAU_DAYS:
        raise ApiError(400, "invalid-value", f"a range is 1 to {MAX_MAU_DAYS} days", "to")
    counts = runtime.models.mau.mau_range(app_id, first, last)
    days = []
    for offset in range((last - first).days + 1):
        current = first + timedelta(days=offset)
        by_type = counts.get(current, {})
        days.append(MauDay(day=current, total=sum(by_type.values()), by_type=by_type))
    return days
