"""Ownership history: one row per (subscription, owner, from, to) interval with
the cause of each change. "Who owned S at T" and "what did U ever own" are each
one indexed query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from domain.base import DomainEvent
from domain.history import OwnershipInterval
from domain.subscription import OwnerChanged, SubscriptionCreated, SubscriptionDeleted
from domain.values import OwnershipCause
from projections.base import ReadModel, micros
from projections.sql import PostgresSqlView, Row, SQLiteSqlView, SqlView, Writer


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, UTC).replace(microsecond=value % 1_000_000)


class OwnershipTables(SqlView):
    TABLES: ClassVar[dict[str, str]] = {
        "ownership": "subscription_id TEXT NOT NULL, seq BIGINT NOT NULL, app_id TEXT NOT NULL, "
        "owner_id TEXT NOT NULL, started_at BIGINT NOT NULL, ended_at BIGINT, "
        "cause TEXT NOT NULL, ended_by TEXT, PRIMARY KEY (subscription_id, seq)",
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

    def open_page(self, writer: Writer) -> _OwnershipPage:
        return _OwnershipPage(writer)


class _OwnershipPage:
    """A page's intervals are opened and closed in memory, in log order; then the
    stored intervals it closes are updated and its new intervals inserted, each
    in one statement."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        # per subscription, the intervals opened on this page: [seq, app_id (None:
        # stored with the first interval), owner_id, started_at, cause, ended_at, ended_by]
        self.opened: dict[str, list[list[Any]]] = {}
        self.stored_closed: dict[str, tuple[int, str]] = {}  # an earlier page's open interval

    def apply(self, event: DomainEvent[Any]) -> None:
        subscription_id = str(event.originator_id)
        if isinstance(event, SubscriptionCreated):
            self._open(subscription_id, event, str(event.app_id))
        elif isinstance(event, OwnerChanged):
            self._close(subscription_id, event, event.cause.value)
            self._open(subscription_id, event, None)
        elif isinstance(event, SubscriptionDeleted):
            self._close(subscription_id, event, "deleted")

    def _open(
        self, subscription_id: str, event: SubscriptionCreated | OwnerChanged, app_id: str | None
    ) -> None:
        self.opened.setdefault(subscription_id, []).append(
            [event.originator_version, app_id, str(event.owner_id), micros(event.timestamp),
             event.cause.value, None, None]
        )  # fmt: skip

    def _close(self, subscription_id: str, event: DomainEvent[Any], ended_by: str) -> None:
        opened = self.opened.get(subscription_id)
        if opened:
            if opened[-1][5] is None:
                opened[-1][5:7] = [micros(event.timestamp), ended_by]
        elif subscription_id not in self.stored_closed:
            self.stored_closed[subscription_id] = (micros(event.timestamp), ended_by)

    def flush(self) -> None:
        self.writer.many(
            "UPDATE {ownership} SET ended_at = ?, ended_by = ? "
            "WHERE subscription_id = ? AND ended_at IS NULL",
            [(at, ended_by, sid) for sid, (at, ended_by) in self.stored_closed.items()],
        )
        app_ids = self._stored_app_ids(
            [sid for sid, rows in self.opened.items() if rows[0][1] is None]
        )
        self.writer.many(
            "INSERT INTO {ownership} (subscription_id, seq, app_id, owner_id, started_at, cause, "
            "ended_at, ended_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (sid, seq, rows[0][1] or app_ids[sid], owner, started, cause, ended, ended_by)
                for sid, rows in self.opened.items()
                for seq, _, owner, started, cause, ended, ended_by in rows
            ],
        )

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
