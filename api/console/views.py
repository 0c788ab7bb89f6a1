"""What each page shows, read as the API reads it: the read models for what is
current, the point-in-time fold of the log for the past. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from uuid import UUID

from idledger.api.console.charts import Boundary, MauChart, Segment, mau_chart, ownership_bar
from idledger.api.console.rendering import ConsoleError
from idledger.api.convert import subscription_out, user_out
from idledger.api.queries import (
    EventOut,
    MauDay,
    UserAsOf,
    event_out,
    lag_report,
    mau_days,
    ownership_timeline,
    readiness,
    user_as_of_body,
    user_of_app,
)
from idledger.api.runtime import Runtime
from idledger.api.schemas import SubscriptionOut, UserOut
from idledger.domain.errors import UserNotFound
from idledger.domain.history import OwnershipInterval
from idledger.projections.dead_letters import describe, is_store_failure

EVENTS_PER_PAGE = 25
DEFAULT_MAU_DAYS = 90
BAD_INSTANT = "at: give an instant such as 2026-07-01T12:00:00 (UTC) or 2026-07-01T14:00:00+02:00"


def parse_instant(text: str | None) -> datetime | None:
    """An "as of" instant: ISO 8601, with a zone or without (then UTC, as the picker says)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
        # In UTC from here on: an instant whose UTC time falls outside years 1 to 9999
        # (0001-01-01T00:00+01:00) overflows, and is refused here, not on the page.
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ConsoleError(400, "Invalid value", BAD_INSTANT) from None


def picker_value(moment: datetime | None) -> str:
    """The value of a datetime-local input: UTC, to the millisecond."""
    if moment is None:
        return ""
    utc = moment.astimezone(UTC)  # already UTC when parse_instant made it
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


@dataclass(frozen=True)
class Health:
    ready: bool
    status: str
    log_head: int | None
    problems: list[str]
    lag: dict[str, dict[str, int | float]]


def health(runtime: Runtime) -> Health:
    """The figures of ``/ready`` and ``/lag``, from the same functions."""
    status, body = readiness(runtime)
    lag: dict[str, dict[str, int | float]] = {}
    problems = list(body.get("problems", []))
    if status == 200:
        try:
            lag = lag_report(runtime)
        except Exception as error:  # the store went away meanwhile: say so
            if not is_store_failure(error):
                raise
            problems.append(f"lag unavailable: {describe(error)}")
    return Health(status == 200, body["status"], body.get("log_head"), problems, lag)


@dataclass(frozen=True)
class ShownEvent:
    version: int
    kind: str  # the event's name without its module: Created, TagsChanged...
    timestamp: datetime
    actor: str  # who asked: system, or an API key's app
    cause: str  # why, when the event says (login, transfer...); else ""
    changes: list[tuple[str, str]]


@dataclass
class UserPage:
    user_id: UUID
    now: UserAsOf
    profile: UserOut | None  # None unless live (the API's GET /users/by/... answers 404)
    at: datetime | None
    then: UserAsOf | None  # the user as of ``at``; None if it did not exist yet
    events: list[ShownEvent]
    has_newer: bool  # this is not the newest page
    newer_before: int | None  # the ``before`` of the newer page (None: the newest)
    older_before: int | None  # the ``before`` of the older page (None: this is the oldest)
    owned: list[tuple[UUID, OwnershipInterval]]
    merged_from: list[UUID] = field(default_factory=list)


def user_page(
    runtime: Runtime, app_id: UUID, onesignal_id: str, at: datetime | None, before: int | None
) -> UserPage:
    user_id = user_of_app(runtime, app_id, onesignal_id)
    now = user_as_of_body(runtime, user_id, datetime.now(UTC))
    found = runtime.models.profiles.profile(app_id, "onesignal_id", str(user_id))
    then = None
    if at is not None:
        try:
            then = user_as_of_body(runtime, user_id, at)
        except UserNotFound:
            then = None  # not created yet at ``at``
    events, older = _events(runtime, user_id, before)
    newer = None
    if before is not None and before + EVENTS_PER_PAGE < _last_version(runtime, user_id):
        newer = before + EVENTS_PER_PAGE
    owned = runtime.models.ownership.owned_by(app_id, user_id)
    return UserPage(
        user_id, now, user_out(*found) if found else None, at, then, events,
        before is not None, newer, older, owned, _merged_from(runtime, app_id, user_id, owned),
    )  # fmt: skip


def _events(
    runtime: Runtime, user_id: UUID, before: int | None
) -> tuple[list[ShownEvent], int | None]:
    """A page of the user's events, newest first, and the ``before`` of the next (older) page."""
    events = runtime.ledger.events
    page = list(events.get(user_id, lte=before, desc=True, limit=EVENTS_PER_PAGE + 1))
    shown = [_shown(event_out(event)) for event in page[:EVENTS_PER_PAGE]]  # type: ignore[arg-type]
    older = shown[-1].version - 1 if len(page) > EVENTS_PER_PAGE else None
    return shown, older


def _last_version(runtime: Runtime, user_id: UUID) -> int:
    newest = list(runtime.ledger.events.get(user_id, desc=True, limit=1))
    return newest[0].originator_version if newest else 0


def _shown(event: EventOut) -> ShownEvent:
    data = dict(event.data)
    cause = str(data.pop("cause", "") or "")
    return ShownEvent(
        event.version, event.type.rpartition(":")[2], event.timestamp, event.actor, cause,
        [(key, _text(value)) for key, value in data.items() if value is not None],
    )  # fmt: skip


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={_text(item)}" for key, item in value.items() if item is not None)
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return "" if value is None else str(value)


def _merged_from(
    runtime: Runtime, app_id: UUID, user_id: UUID, owned: list[tuple[UUID, OwnershipInterval]]
) -> list[UUID]:
    """Users retired into this one: the previous owners of subscriptions that moved
    here, whose own fold says they were merged into this user."""
    previous: list[UUID] = []
    for subscription_id, interval in owned:
        timeline = runtime.models.ownership.timeline(app_id, subscription_id)
        for earlier, later in pairwise(timeline):
            moved_here = later.owner_id == user_id and later.start == interval.start
            if moved_here and earlier.owner_id not in (user_id, *previous):
                previous.append(earlier.owner_id)
    now = datetime.now(UTC)
    merged = []
    for candidate in previous:
        user = runtime.ledger.user_as_of(candidate, now)
        if user is not None and user.merged_into == user_id:
            merged.append(candidate)
    return merged


@dataclass(frozen=True)
class SubscriptionPage:
    subscription_id: UUID
    current: SubscriptionOut | None  # None once deleted (or erased)
    intervals: list[OwnershipInterval]
    segments: list[Segment]
    boundaries: list[Boundary]
    at: datetime | None
    owner_at: UUID | None


def subscription_page(
    runtime: Runtime, app_id: UUID, subscription_id: str, at: datetime | None
) -> SubscriptionPage:
    sid, intervals = ownership_timeline(runtime, app_id, subscription_id)
    current = runtime.models.profiles.subscription(app_id, sid)
    segments, boundaries = ownership_bar(intervals, datetime.now(UTC))
    owner_at = runtime.models.ownership.owner_of(app_id, sid, at) if at else None
    return SubscriptionPage(
        sid, subscription_out(current) if current else None, intervals, segments, boundaries,
        at, owner_at,
    )  # fmt: skip


@dataclass(frozen=True)
class MauPage:
    first: date
    last: date
    days: list[MauDay]
    types: list[str]
    chart: MauChart


def mau_range(first_text: str | None, last_text: str | None) -> tuple[date, date]:
    """The days asked for; by default the last 90 days, today (UTC) included."""
    try:
        last = date.fromisoformat(last_text) if last_text else datetime.now(UTC).date()
        first = (date.fromisoformat(first_text) if first_text
                 else last - timedelta(days=DEFAULT_MAU_DAYS - 1))  # fmt: skip
    except ValueError:
        raise ConsoleError(400, "Invalid value", "from, to: give days as 2026-07-01") from None
    return first, last


def mau_page(runtime: Runtime, app_id: UUID, first: date, last: date) -> MauPage:
    days = mau_days(runtime, app_id, first, last)
    types = sorted({kind for day in days for kind in day.by_type})
    return MauPage(first, last, days, types, mau_chart(days, types))


def mau_csv(page: MauPage) -> str:
    lines = [",".join(["day", "total", *page.types])]
    for day in page.days:
        counts = [str(day.by_type.get(kind, 0)) for kind in page.types]
        lines.append(",".join([day.day.isoformat(), str(day.total), *counts]))
    return "\n".join(lines) + "\n"
