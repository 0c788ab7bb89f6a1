"""Ownership history: one row per (subscription, owner, from, to) interval with
the cause of each change. "Who owned S at T" and "what did U ever own" are each
one indexed query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID

from idledger.domain.history import OwnershipInterval
from idledger.domain.subscription import OwnerChanged, SubscriptionCreated, SubscriptionDeleted
from idledger.domain.values import OwnershipCause
from idledger.projections.base import ReadModel, micros, micros_of
from idledger.projections.dead_letters import DEAD_LETTER_COLUMNS
from idledger.projections.records import Recorded
from idledger.projections.sql import PostgresSqlView, Row, SQLiteSqlView, SqlView, Writer


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


class OwnershipTables(SqlView):
    DEAD_LETTERS: ClassVar[str] = "ownership_dead_letters"
    TABLES: ClassVar[dict[str, str]] = {
        "ownership": "subscription_id TEXT NOT NULL, seq BIGINT NOT NULL, app_id TEXT NOT NULL, "
        "owner_id TEXT NOT NULL, started_at BIGINT NOT NULL, ended_at BIGINT, "
        "cause TEXT NOT NULL, ended_by TEXT, PRIMARY KEY (subscription_id, seq)",
        "ownership_dead_letters": DEAD_LETTER_COLUMNS,
    }
    INDEXES: ClassVar[dict[str, str]] = {
        "ownership_at": "ON {ownership} (subscription_id, started_at)",
        "ownership_owner": "ON {ownership} (owner_id, started_at)",
    }
    COLUMNS = "owner_id, started_at, ended_at, cause, ended_by"

    def owner_of(self, app_id: UUID, subscription_id: UUID, at: datetime) -> UUID | None:
        row = self.one(
            "SELECT owner_id FROM {ownership} WHERE subscription_id = ? AND app_id = ? "
            "AND started_at <= ? AND (ended_at IS NULL OR ended_at > ?) "
            "ORDER BY started_at DESC, seq DESC LIMIT 1",
            str(subscription_id), str(app_id), micros(at), micros(at),
        )  # fmt: skip
        return UUID(row["owner_id"]) if row else None

    def timeline(self, app_id: UUID, subscription_id: UUID) -> list[OwnershipInterval]:
        rows = self.all(
            f"SELECT {self.COLUMNS} FROM {{ownership}} WHERE subscription_id = ? AND app_id = ? "
            "ORDER BY seq",
            str(subscription_id), str(app_id),
        )  # fmt: skip
        return [_interval(row) for row in rows]

    def owned_by(self, app_id: UUID, owner_id: UUID) -> list[tuple[UUID, OwnershipInterval]]:
        """Every subscription the user ever owned, with the interval of each ownership."""
        rows = self.all(
            f"SELECT subscription_id, {self.COLUMNS} FROM {{ownership}} WHERE owner_id = ? "
            "AND app_id = ? ORDER BY started_at, subscription_id",
            str(owner_id), str(app_id),
        )  # fmt: skip
        return [(UUID(row["subscription_id"]), _interval(row)) for row in rows]


def _interval(row: Row) -> OwnershipInterval:
    return OwnershipInterval(
        owner_id=UUID(row["owner_id"]),
        start=from_micros(row["started_at"]),
        end=from_micros(row["ended_at"]) if row["ended_at"] is not None else None,
        cause=OwnershipCause(row["cause"]),
        ended_by=row["ended_by"],
    )


class SQLiteOwnershipView(OwnershipTables, SQLiteSqlView):
    pass


class PostgresOwnershipView(OwnershipTables, PostgresSqlView):
    pass


class OwnershipProjection(ReadModel[OwnershipTables]):
    name = "ownership"
    TOPICS = frozenset({SubscriptionCreated.TOPIC, OwnerChanged.TOPIC, SubscriptionDeleted.TOPIC})

    def open_page(self, writer: Writer) -> _OwnershipPage:
        return _OwnershipPage(writer)


@dataclass
class _Interval:
    """An interval opened on this page; ``ended_at`` is set if the page also closes it."""

    seq: int
    owner_id: str
    started_at: int
    cause: str
    ended_at: int | None = None
    ended_by: str | None = None


class _OwnershipPage:
    """A page's intervals are opened and closed in memory, in log order; then the
    stored intervals it closes are updated and its new intervals inserted, each
    in one statement."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.opened: dict[str, list[_Interval]] = {}  # per subscription, in log order
        self.created_here: dict[str, str] = {}  # subscription -> app, created on this page
        self.stored_closed: dict[str, tuple[int, str]] = {}  # an earlier page's open interval

    def apply(self, event: Recorded) -> None:
        subscription_id, state = event.originator_id, event.state
        at = micros_of(state["timestamp"])
        if event.topic == SubscriptionCreated.TOPIC:
            self.created_here[subscription_id] = state["app_id"]
            self._open(subscription_id, event, at)
        elif event.topic == OwnerChanged.TOPIC:
            self._close(subscription_id, at, state["cause"])
            self._open(subscription_id, event, at)
        else:  # deleted
            self._close(subscription_id, at, "deleted")

    def _open(self, subscription_id: str, event: Recorded, at: int) -> None:
        self.opened.setdefault(subscription_id, []).append(
            _Interval(event.originator_version, event.state["owner_id"], at, event.state["cause"])
        )

    def _close(self, subscription_id: str, at: int, ended_by: str) -> None:
        opened = self.opened.get(subscription_id)
        if opened:
            last = opened[-1]
            if last.ended_at is None:
                last.ended_at, last.ended_by = at, ended_by
        elif subscription_id not in self.stored_closed:
            self.stored_closed[subscription_id] = (at, ended_by)

    def flush(self) -> None:
        self.writer.many(
            "UPDATE {ownership} SET ended_at = ?, ended_by = ? "
            "WHERE subscription_id = ? AND ended_at IS NULL",
            [(at, ended_by, sid) for sid, (at, ended_by) in self.stored_closed.items()],
        )
        app_ids = self._stored_app_ids([sid for sid in self.opened if sid not in self.created_here])
        app_ids.update(self.created_here)
        self.writer.many(
            "INSERT INTO {ownership} (subscription_id, seq, app_id, owner_id, started_at, cause, "
            "ended_at, ended_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (sid, i.seq, app_ids[sid], i.owner_id, i.started_at, i.cause, i.ended_at,
                 i.ended_by)
                for sid, intervals in self.opened.items()
                for i in intervals
            ],
        )  # fmt: skip

    def _stored_app_ids(self, subscription_ids: list[str]) -> dict[str, str]:
        """The app of subscriptions created on earlier pages, from their first interval."""
        rows = self.writer.all_in(
            "SELECT subscription_id, app_id FROM {ownership} WHERE seq = 1 AND subscription_id IN",
            subscription_ids,
        )
        found = {row["subscription_id"]: row["app_id"] for row in rows}
        missing = set(subscription_ids) - found.keys()
        assert not missing, f"a subscription's first event opens its first interval: {missing}"
        return found
