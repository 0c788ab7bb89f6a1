"""Rolling 30-day monthly active users per app, overall and per subscription type.

The count for day D is the number of distinct mobile push subscriptions with a
session in the 30 days ending on D. Counts are kept per (app, day, type) and
maintained as sessions arrive: a session on day d of subscription S covers the
days d..d+29, minus those already covered by S's nearest earlier active day p
(up to p+29) and from its nearest later active day n on. Only those days are
incremented, so a late or imported session is exact, and reading a day or a
range costs the same whatever the length of the history.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from typing import Any, ClassVar
from uuid import UUID

from domain.base import DomainEvent
from domain.subscription import SessionRecorded, SubscriptionCreated
from projections.base import ReadModel
from projections.sql import PostgresSqlView, SQLiteSqlView, SqlView, Writer

WINDOW_DAYS = 30
_EPOCH = date(1970, 1, 1)


def day_number(moment: datetime | date) -> int:
    day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment
    return (day - _EPOCH).days


def newly_covered(day: int, previous: int | None, following: int | None) -> range:
    """The days whose window gains this subscription when it is active on ``day``."""
    first = day if previous is None else max(day, previous + WINDOW_DAYS)
    last = day + WINDOW_DAYS - 1 if following is None else min(day + WINDOW_DAYS - 1, following - 1)
    return range(first, last + 1)


class MauTables(SqlView):
    TABLES: ClassVar[dict[str, str]] = {
        "mau_subscriptions": "subscription_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, "
        "type TEXT NOT NULL",
        "mau_active_days": "subscription_id TEXT NOT NULL, day INTEGER NOT NULL, "
        "PRIMARY KEY (subscription_id, day)",
        "mau_counts": "app_id TEXT NOT NULL, day INTEGER NOT NULL, type TEXT NOT NULL, "
        "active BIGINT NOT NULL, PRIMARY KEY (app_id, day, type)",
    }

    def mau(self, app_id: UUID, day: date) -> dict[str, int]:
        """Active mobile push subscriptions per type in the 30 days ending on ``day``."""
        return self.mau_range(app_id, day, day).get(day, {})

    def mau_range(self, app_id: UUID, first: date, last: date) -> dict[date, dict[str, int]]:
        rows = self.all(
            "SELECT day, type, active FROM {mau_counts} WHERE app_id = ? AND day BETWEEN ? AND ? "
            "AND active > 0",
            str(app_id), day_number(first), day_number(last),
        )  # fmt: skip
        counts: dict[date, dict[str, int]] = {}
        for row in rows:
            day = date.fromordinal(_EPOCH.toordinal() + row["day"])
            counts.setdefault(day, {})[row["type"]] = row["active"]
        return counts


class SQLiteMauView(MauTables, SQLiteSqlView):
    pass


class PostgresMauView(MauTables, PostgresSqlView):
    pass


class MauProjection(ReadModel[MauTables]):
    name = "mau"

    def open_page(self, writer: Writer) -> _MauPage:
        return _MauPage(writer)


class _MauPage:
    """One page of sessions: active days are written as they come (later sessions
    of the page look at them); count increments are summed and written once."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.kinds: dict[str, tuple[str, str] | None] = {}
        self.increments: Counter[tuple[str, int, str]] = Counter()

    def apply(self, event: DomainEvent[Any]) -> None:
        if isinstance(event, SubscriptionCreated) and event.spec.type.is_mobile_push:
            kind = (str(event.app_id), event.spec.type.value)
            self.kinds[str(event.originator_id)] = kind
            self.writer.execute(
                "INSERT INTO {mau_subscriptions} (subscription_id, app_id, type) VALUES (?, ?, ?)",
                str(event.originator_id), *kind,
            )  # fmt: skip
        elif isinstance(event, SessionRecorded):
            self._record_active_day(str(event.originator_id), day_number(event.active_at))

    def _kind(self, subscription_id: str) -> tuple[str, str] | None:
        if subscription_id not in self.kinds:
            row = self.writer.one(
                "SELECT app_id, type FROM {mau_subscriptions} WHERE subscription_id = ?",
                subscription_id,
            )
            self.kinds[subscription_id] = (row["app_id"], row["type"]) if row else None
        return self.kinds[subscription_id]

    def _record_active_day(self, subscription_id: str, day: int) -> None:
        kind = self._kind(subscription_id)
        if kind is None:  # not a mobile push subscription: it does not count
            return
        # Only neighbours within a window's reach matter; one indexed range read.
        near = self.writer.one(
            "SELECT MAX(CASE WHEN day < ? THEN day END) AS previous, "
            "MIN(CASE WHEN day > ? THEN day END) AS following, "
            "MAX(CASE WHEN day = ? THEN 1 ELSE 0 END) AS seen "
            "FROM {mau_active_days} WHERE subscription_id = ? AND day BETWEEN ? AND ?",
            day, day, day, subscription_id, day - WINDOW_DAYS, day + WINDOW_DAYS,
        )  # fmt: skip
        if near is not None and near["seen"]:
            return
        self.writer.execute(
            "INSERT INTO {mau_active_days} (subscription_id, day) VALUES (?, ?)",
            subscription_id, day,
        )  # fmt: skip
        previous = near["previous"] if near else None
        following = near["following"] if near else None
        for covered in newly_covered(day, previous, following):
            self.increments[(kind[0], covered, kind[1])] += 1

    def flush(self) -> None:
        self.writer.many(
            "INSERT INTO {mau_counts} (app_id, day, type, active) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (app_id, day, type) DO UPDATE "
            "SET active = {mau_counts}.active + excluded.active",
            [(app_id, day, kind, n) for (app_id, day, kind), n in sorted(self.increments.items())],
        )
