"""idledger endpoints beyond OneSignal: ownership history, users as of an
instant and their events, and rolling 30-day MAU."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel

from idledger.api import examples as ex
from idledger.api.deps import AppId, ReaderDep, RuntimeDep
from idledger.api.errors import ApiError
from idledger.api.openapi_docs import errors, merge
from idledger.api.queries import (
    MAX_VERSION,
    EventOut,
    MauDay,
    UserAsOf,
    event_out,
    mau_days,
    ownership_timeline,
    user_as_of_body,
    user_of_app,
)
from idledger.api.routes.common import KEYED, PATH
from idledger.domain.history import OwnershipInterval

router = APIRouter(prefix="/apps/{app_id}/idledger", tags=["idledger"])
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


class EventPage(BaseModel):
    onesignal_id: UUID
    events: list[EventOut]
    next_after: int | None


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
    sid, intervals = ownership_timeline(runtime, app_id, subscription_id)
    if at is None:
        return Ownership(subscription_id=sid, intervals=[_interval(i) for i in intervals])
    owner = runtime.models.ownership.owner_of(app_id, sid, at)
    return Ownership(subscription_id=sid, at=at, owner_id=owner)


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


@router.get(
    "/users/{onesignal_id}/events",
    response_model=EventPage,
    responses=merge({200: ex.EVENTS}, errors(*KEYED, ex.INVALID_QUERY, ex.USER_NOT_FOUND)),
)
def user_events(
    onesignal_id: str,
    app_id: AppId,
    runtime: RuntimeDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_VERSION, description="Return events after this version")
    ] = 0,
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
