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

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import ClassVar
from uuid import UUID

from idledger.domain.subscription import SessionRecorded, SubscriptionCreated
from idledger.domain.values import MOBILE_PUSH_TYPES
from idledger.projections.base import ReadModel
from idledger.projections.dead_letters import DEAD_LETTER_COLUMNS
from idledger.projections.records import Recorded
from idledger.projections.sql import PostgresSqlView, SQLiteSqlView, SqlView, Writer, chunked

WINDOW_DAYS = 30
_EPOCH = date(1970, 1, 1)
_MOBILE_PUSH = frozenset(kind.value for kind in MOBILE_PUSH_TYPES)


def day_number(moment: datetime | date) -> int:
    day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment
    return (day - _EPOCH).days


_UTC_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> day number: sessions share few days


def day_number_of(iso: str) -> int:
    """``day_number`` of a time as the log writes it (ISO 8601): a UTC time's day
    is its first ten characters."""
    if iso[-1] != "Z":
        return day_number(datetime.fromisoformat(iso))
    day = _UTC_DAYS.get(iso[:10])
    if day is None:
        if len(_UTC_DAYS) > 100_000:
            _UTC_DAYS.clear()
        day = _UTC_DAYS[iso[:10]] = (date.fromisoformat(iso[:10]) - _EPOCH).days
    return day


def newly_covered(day: int, previous: int | None, following: int | None) -> range:
    """The days whose window gains this subscription when it is active on ``day``."""
    first = day if previous is None else max(day, previous + WINDOW_DAYS)
    last = day + WINDOW_DAYS - 1 if following is None else min(day + WINDOW_DAYS - 1, following - 1)
    return range(first, last + 1)


class MauTables(SqlView):
    DEAD_LETTERS: ClassVar[str] = "mau_dead_letters"
    TABLES: ClassVar[dict[str, str]] = {
        "mau_subscriptions": "subscription_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, "
        "type TEXT NOT NULL",
        "mau_active_days": "subscription_id TEXT NOT NULL, day INTEGER NOT NULL, "
        "PRIMARY KEY (subscription_id, day)",
        "mau_counts": "app_id TEXT NOT NULL, day INTEGER NOT NULL, type TEXT NOT NULL, "
        "active BIGINT NOT NULL, PRIMARY KEY (app_id, day, type)",
        "mau_dead_letters": DEAD_LETTER_COLUMNS,
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
    TOPICS = frozenset({SubscriptionCreated.TOPIC, SessionRecorded.TOPIC})

    def open_page(self, writer: Writer) -> _MauPage:
        return _MauPage(writer)


class _MauPage:
    """One page of sessions, applied with a fixed number of statements: the page's
    subscriptions and their active days near the page's sessions are read at once,
    the sessions are folded in memory in log order, and the new days and the summed
    count increments are written at once."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.created: list[tuple[str, str, str]] = []
        self.sessions: list[tuple[str, int]] = []

    def apply(self, event: Recorded) -> None:
        if event.topic == SessionRecorded.TOPIC:
            self.sessions.append((event.originator_id, day_number_of(event.state["active_at"])))
        else:  # created
            kind = event.state["spec"]["type"]
            if kind in _MOBILE_PUSH:
                self.created.append((event.originator_id, event.state["app_id"], kind))

    def flush(self) -> None:
        self.writer.many(
            "INSERT INTO {mau_subscriptions} (subscription_id, app_id, type) VALUES (?, ?, ?)",
            self.created,
        )
        kinds = {sid: (app_id, kind) for sid, app_id, kind in self.created}
        kinds.update(self._stored_kinds({sid for sid, _ in self.sessions} - kinds.keys()))
        sessions = [(sid, day) for sid, day in self.sessions if sid in kinds]
        known = self._days_near(sessions)
        new_days: list[tuple[str, int]] = []
        # Each new active day adds one to a run of days: kept as the run's two ends
        # per (app, type), summed into per-day counts once for the page.
        ends: dict[tuple[str, str], Counter[int]] = {}
        for sid, day in sessions:
            days = known.setdefault(sid, [])
            at = bisect_left(days, day)
            if at < len(days) and days[at] == day:
                continue  # this subscription was already active that day
            previous = days[at - 1] if at > 0 else None
            following = days[at] if at < len(days) else None
            days.insert(at, day)
            new_days.append((sid, day))
            covered = newly_covered(day, previous, following)
            if covered:
                run = ends.get(kinds[sid])
                if run is None:
                    run = ends[kinds[sid]] = Counter()
                run[covered.start] += 1
                run[covered.stop] -= 1
        self.writer.many(
            "INSERT INTO {mau_active_days} (subscription_id, day) VALUES (?, ?)", new_days
        )
        self.writer.many(
            "INSERT INTO {mau_counts} (app_id, day, type, active) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (app_id, day, type) DO UPDATE "
            "SET active = {mau_counts}.active + excluded.active",
            sorted(per_day(ends)),
        )

    def _stored_kinds(self, subscription_ids: set[str]) -> dict[str, tuple[str, str]]:
        """(app, type) of mobile push subscriptions created on earlier pages."""
        rows = self.writer.all_in(
            "SELECT subscription_id, app_id, type FROM {mau_subscriptions} "
            "WHERE subscription_id IN",
            sorted(subscription_ids),
        )
        return {row["subscription_id"]: (row["app_id"], row["type"]) for row in rows}

    def _days_near(self, sessions: list[tuple[str, int]]) -> dict[str, list[int]]:
        """Each subscription's stored active days within a window of the page's
        sessions (sorted): all a neighbour search can reach."""
        spans: dict[str, tuple[int, int]] = {}
        for sid, day in sessions:
            low, high = spans.get(sid, (day, day))
            spans[sid] = (min(low, day), max(high, day))
        found: dict[str, list[int]] = {}
        for chunk in chunked(sorted(spans)):
            wanted = [
                value
                for sid in chunk
                for value in (sid, spans[sid][0] - WINDOW_DAYS, spans[sid][1] + WINDOW_DAYS)
            ]
            rows = self.writer.all(
                f"WITH wanted (sid, low, high) AS (VALUES {', '.join(['(?, ?, ?)'] * len(chunk))}) "
                "SELECT subscription_id, day FROM wanted JOIN {mau_active_days} "
                "ON subscription_id = sid AND day BETWEEN low AND high "
                "ORDER BY subscription_id, day",
                *wanted,
            )  # fmt: skip
            for row in rows:
                found.setdefault(row["subscription_id"], []).append(row["day"])
        return found


def per_day(ends: dict[tuple[str, str], Counter[int]]) -> Iterator[tuple[str, int, str, int]]:
    """(app, day, type, increment) for every day some run covers."""
    for (app_id, kind), run in ends.items():
        active, since = 0, 0
        for day in sorted(run):
            if active:
                yield from ((app_id, covered, kind, active) for covered in range(since, day))
            active, since = active + run[day], day
