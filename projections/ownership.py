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

    def apply(self, writer: Writer, event: DomainEvent[Any]) -> None:
        if isinstance(event, SubscriptionCreated):
            self._open(writer, event, str(event.app_id))
        elif isinstance(event, OwnerChanged):
            row = writer.one(
                "SELECT app_id FROM {ownership} WHERE subscription_id = ? AND seq = 1",
                str(event.originator_id),
            )
            assert row is not None, "a subscription's first event opens its first interval"
            self._close(writer, event, event.cause.value)
            self._open(writer, event, row["app_id"])
        elif isinstance(event, SubscriptionDeleted):
            self._close(writer, event, "deleted")

    @staticmethod
    def _open(writer: Writer, event: SubscriptionCreated | OwnerChanged, app_id: str) -> None:
        writer.execute(
            "INSERT INTO {ownership} (subscription_id, seq, app_id, owner_id, started_at, cause) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            str(event.originator_id), event.originator_version, app_id, str(event.owner_id),
            micros(event.timestamp), event.cause.value,
        )  # fmt: skip

    @staticmethod
    def _close(writer: Writer, event: DomainEvent[Any], ended_by: str) -> None:
        writer.execute(
            "UPDATE {ownership} SET ended_at = ?, ended_by = ? "
            "WHERE subscription_id = ? AND ended_at IS NULL",
            micros(event.timestamp), ended_by, str(event.originator_id),
        )  # fmt: skip
