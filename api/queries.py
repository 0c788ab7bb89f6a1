"""Reads that the API's routes and the console share, so that a page shows what
the matching endpoint answers: a user of an app in any state, a user as of an
instant, its events, a subscription's ownership timeline, rolling MAU, and the
figures of ``/ready`` and ``/lag``."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from idledger.api.convert import identity_of, properties_of
from idledger.api.errors import ApiError
from idledger.api.lookup import subscription_uuid
from idledger.api.runtime import Runtime
from idledger.api.schemas import PropertiesOut
from idledger.domain.base import DomainEvent
from idledger.domain.errors import SubscriptionNotFound, UserNotFound
from idledger.domain.history import OwnershipInterval, events_of
from idledger.domain.mapper import event_state
from idledger.partitions import partition_suffix
from idledger.projections.dead_letters import describe, is_store_failure

MAX_MAU_DAYS = 3660
MAX_VERSION = 2**63 - 1  # the stores' largest integer: a larger one overflows SQLite


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


class MauDay(BaseModel):
    day: date
    total: int
    by_type: dict[str, int]


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


def user_as_of_body(runtime: Runtime, user_id: UUID, moment: datetime) -> UserAsOf:
    """The user as of ``moment``, folded from the log."""
    user = runtime.ledger.user_as_of(user_id, moment)
    if user is None:
        raise UserNotFound(f"{user_id} at {moment.isoformat()}")
    status = "retired" if user.merged_into else "deleted" if user.deleted else "live"
    return UserAsOf(
        onesignal_id=user_id, at=moment, status=status, merged_into=user.merged_into,
        survivor_id=runtime.ledger.survivor_of(user_id), identity=identity_of(user),
        properties=properties_of(user), subscription_ids=sorted(user.subscriptions, key=str),
    )  # fmt: skip


def event_out(event: DomainEvent[Any]) -> EventOut:
    data = event_state(event)
    for header in ("timestamp", "actor", "schema_version"):
        data.pop(header, None)
    return EventOut(
        version=event.originator_version, type=event.TOPIC, timestamp=event.timestamp,
        actor=event.actor, data=data,
    )  # fmt: skip


def ownership_timeline(
    runtime: Runtime, app_id: UUID, subscription_id: str
) -> tuple[UUID, list[OwnershipInterval]]:
    """The subscription (a path segment) and its ownership intervals; not found when
    the segment is no UUID or the subscription has no interval in this app."""
    sid = subscription_uuid(subscription_id)
    intervals = runtime.models.ownership.timeline(app_id, sid)
    if not intervals:
        raise SubscriptionNotFound(sid)
    return sid, intervals


def mau_days(runtime: Runtime, app_id: UUID, first: date, last: date) -> list[MauDay]:
    """Each day of ``first``..``last`` with its rolling 30-day MAU."""
    if last < first or (last - first).days >= MAX_MAU_DAYS:
        raise ApiError(400, "invalid-value", f"a range is 1 to {MAX_MAU_DAYS} days", "to")
    counts = runtime.models.mau.mau_range(app_id, first, last)
    days = []
    for offset in range((last - first).days + 1):
        current = first + timedelta(days=offset)
        by_type = counts.get(current, {})
        days.append(MauDay(day=current, total=sum(by_type.values()), by_type=by_type))
    return days


def readiness(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/ready``: partition 0's, and with partitions
    each other's under ``partitions``. A process that can serve some partitions'
    apps stays ready ("degraded", the others' problems listed): a load balancer
    taking every process out because one partition's store is down would turn one
    partition's outage into everyone's. Unready when no partition is."""
    first, *others = runtime.each_partition()  # the same report from any partition's runtime
    status, body = _partition_readiness(first)
    if not others:
        return status, body
    reports = {first.partition: (status, body)}
    reports.update({p.partition: _partition_readiness(p) for p in others})
    body = dict(body)
    body["partitions"] = {str(n): report for n, (_, report) in reports.items() if n}
    body["problems"] = [
        f"partition {n}: {problem}" if n else problem
        for n, (_, report) in reports.items()
        for problem in report["problems"]
    ]
    serving = [n for n, (code, _) in reports.items() if code == 200]
    body["status"] = "ready" if len(serving) == len(reports) else "degraded"
    return (200, body) if serving else _not_ready(body["problems"], body)


def _partition_readiness(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    if not runtime.gate.is_open:
        return _not_ready([f"event store unreachable: {runtime.gate.reason}"])
    try:
        head = runtime.ledger.recorder.max_notification_id() or 0
        dead_letters = runtime.models.dead_letters()
    except Exception as error:  # the store is down: say so, do not 500
        if is_store_failure(error):
            runtime.gate.trip(error)
        return _not_ready([f"event store unreachable: {describe(error)}"])
    problems = []
    projector = runtime.projector
    if projector is not None and projector.error is not None:
        problems.append(f"projector interrupted: {describe(projector.error)}")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "degraded",
        "log_head": head,
        "dead_letters": dead_letters,
        "problems": problems,
    }
    if runtime.replicas is not None:  # a standby down or behind is skipped, not a problem
        body["read_replicas"] = runtime.replicas.status()
    return (200, body) if not problems else _not_ready(problems, body)


def _not_ready(
    problems: list[str], body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    return 503, body or {"status": "unavailable", "problems": problems}


def lag_report(runtime: Runtime) -> dict[str, dict[str, int | float]]:
    """The body of ``/lag``: per read model (of each partition: "profiles@p1"),
    events behind, their age, dead letters."""
    report: dict[str, dict[str, int | float]] = {}
    for partition in runtime.each_partition():
        dead_letters = partition.models.dead_letters()
        suffix = partition_suffix(partition.partition)
        report.update(
            {
                name + suffix: {
                    "events": lag.events,
                    "seconds": lag.seconds,
                    "dead_letters": dead_letters[name],
                }
                for name, lag in partition.models.lag().items()
            }
        )
    return report
