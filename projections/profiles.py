"""Current profiles: every user and subscription as it stands now, found by
onesignal_id, external_id, any alias, or subscription id.

Each row keeps the aggregate's state as JSON beside the indexed columns; an
event is applied to that state with the domain's own ``apply``, so the read
model cannot drift from the domain's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from idledger.domain.base import DomainEvent
from idledger.domain.subscription import Subscription
from idledger.domain.user import User, UserErased
from idledger.projections.base import ReadModel, micros
from idledger.projections.dead_letters import DEAD_LETTER_COLUMNS
from idledger.projections.sql import PostgresSqlView, SQLiteSqlView, SqlView, Writer
from idledger.projections.state import (
    subscription_from_json,
    subscription_to_json,
    user_from_json,
    user_to_json,
)

A = TypeVar("A", User, Subscription)


class ProfilesTables(SqlView):
    DEAD_LETTERS: ClassVar[str] = "profile_dead_letters"
    TABLES: ClassVar[dict[str, str]] = {
        "profile_users": "user_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, "
        "external_id TEXT, status TEXT NOT NULL, merged_into TEXT, "
        "updated_at BIGINT NOT NULL, state TEXT NOT NULL",
        "profile_aliases": "app_id TEXT NOT NULL, label TEXT NOT NULL, alias_id TEXT NOT NULL, "
        "user_id TEXT NOT NULL, PRIMARY KEY (app_id, label, alias_id)",
        "profile_subscriptions": "subscription_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, "
        "user_id TEXT, type TEXT NOT NULL, status TEXT NOT NULL, "
        "updated_at BIGINT NOT NULL, state TEXT NOT NULL",
        "profile_dead_letters": DEAD_LETTER_COLUMNS,
    }
    INDEXES: ClassVar[dict[str, str]] = {
        "profile_aliases_user": "ON {profile_aliases} (user_id)",
        "profile_subscriptions_user": "ON {profile_subscriptions} (user_id)",
    }

    def user(self, app_id: UUID, user_id: UUID) -> User | None:
        """A live user of the app, else ``None`` (retired and deleted users included)."""
        with self.reading() as cursor:
            return _live_user(Writer(cursor, self.render), app_id, str(user_id))

    def user_by_alias(self, app_id: UUID, label: str, alias_id: str) -> User | None:
        with self.reading() as cursor:
            reader = Writer(cursor, self.render)
            user_id = _user_id_by_alias(reader, app_id, label, alias_id)
            return _live_user(reader, app_id, user_id) if user_id else None

    def profile(
        self, app_id: UUID, label: str, alias_id: str
    ) -> tuple[User, list[Subscription]] | None:
        """A live user and its live subscriptions, by any alias, in one read transaction."""
        with self.reading() as cursor:
            reader = Writer(cursor, self.render)
            user_id = _user_id_by_alias(reader, app_id, label, alias_id)
            user = _live_user(reader, app_id, user_id) if user_id else None
            if user is None:
                return None
            return user, _live_subscriptions(reader, app_id, str(user.id))

    def merged_into(self, user_id: UUID) -> UUID | None:
        """Audit link from a retired onesignal_id to the user it was merged into."""
        row = self.one("SELECT merged_into FROM {profile_users} WHERE user_id = ?", str(user_id))
        return UUID(row["merged_into"]) if row and row["merged_into"] else None

    def subscription(self, app_id: UUID, subscription_id: UUID) -> Subscription | None:
        row = self.one(
            "SELECT state FROM {profile_subscriptions} WHERE subscription_id = ? "
            "AND app_id = ? AND status = 'live'",
            str(subscription_id), str(app_id),
        )  # fmt: skip
        return subscription_from_json(row["state"]) if row else None

    def subscriptions_of(self, app_id: UUID, user_id: UUID) -> list[Subscription]:
        with self.reading() as cursor:
            return _live_subscriptions(Writer(cursor, self.render), app_id, str(user_id))


def _user_id_by_alias(reader: Writer, app_id: UUID, label: str, alias_id: str) -> str | None:
    if label == "onesignal_id":
        try:
            return str(UUID(alias_id))
        except ValueError:
            return None
    row = reader.one(
        "SELECT user_id FROM {profile_aliases} WHERE app_id = ? AND label = ? AND alias_id = ?",
        str(app_id), label, alias_id,
    )  # fmt: skip
    return row["user_id"] if row else None


def _live_user(reader: Writer, app_id: UUID, user_id: str) -> User | None:
    row = reader.one(
        "SELECT state FROM {profile_users} WHERE user_id = ? AND app_id = ? AND status = 'live'",
        user_id, str(app_id),
    )  # fmt: skip
    return user_from_json(row["state"]) if row else None


def _live_subscriptions(reader: Writer, app_id: UUID, user_id: str) -> list[Subscription]:
    rows = reader.all(
        "SELECT state FROM {profile_subscriptions} WHERE user_id = ? AND app_id = ? "
        "AND status = 'live' ORDER BY subscription_id",
        user_id, str(app_id),
    )  # fmt: skip
    return [subscription_from_json(row["state"]) for row in rows]


class SQLiteProfilesView(ProfilesTables, SQLiteSqlView):
    pass


class PostgresProfilesView(ProfilesTables, PostgresSqlView):
    pass


class ProfilesProjection(ReadModel[ProfilesTables]):
    name = "profiles"

    def open_page(self, writer: Writer) -> _ProfilesPage:
        return _ProfilesPage(writer)


class _ProfilesPage:
    """The aggregates one page touches, loaded at once (only those created on an
    earlier page have a row to load), folded with the domain's own ``apply``, then
    written back with their alias rows."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.events: list[DomainEvent[Any]] = []
        self.users: dict[UUID, User | None] = {}
        self.identity_before: dict[UUID, dict[str, str]] = {}
        self.subscriptions: dict[UUID, Subscription | None] = {}
        self.erased = False  # the page erased someone: old pages of the file are wiped

    def apply(self, event: DomainEvent[Any]) -> None:
        self.events.append(event)

    def _fold(self) -> None:
        stored_users: set[UUID] = set()
        stored_subscriptions: set[UUID] = set()
        for event in self.events:
            kind, key = event.aggregate_class(), event.originator_id
            folded: dict[UUID, Any]
            if kind is User:
                folded, stored = self.users, stored_users
            elif kind is Subscription:
                folded, stored = self.subscriptions, stored_subscriptions
            else:
                continue
            if key not in folded:
                folded[key] = None
                if event.originator_version > 1:  # created on an earlier page
                    stored.add(key)
        for user in self._load("profile_users", "user_id", stored_users, user_from_json):
            self.users[user.id] = user
            self.identity_before[user.id] = _identity(user) if user.is_live else {}
        for subscription in self._load(
            "profile_subscriptions", "subscription_id", stored_subscriptions, subscription_from_json
        ):
            self.subscriptions[subscription.id] = subscription
        for event in self.events:
            kind, key = event.aggregate_class(), event.originator_id
            if kind is User:
                self.users[key] = cast(User, event.mutate(self.users[key]))
            elif kind is Subscription:
                self.subscriptions[key] = cast(Subscription, event.mutate(self.subscriptions[key]))

    def _load(
        self, table: str, key: str, ids: set[UUID], from_json: Callable[[str], A]
    ) -> Iterator[A]:
        rows = self.writer.all_in(
            f"SELECT state FROM {{{table}}} WHERE {key} IN", sorted(map(str, ids))
        )
        yield from (from_json(row["state"]) for row in rows)

    def flush(self) -> None:
        self._fold()
        users = [u for u in self.users.values() if u is not None]
        self.writer.many(
            "INSERT INTO {profile_users} (user_id, app_id, external_id, status, merged_into, "
            "updated_at, state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE "
            "SET external_id = excluded.external_id, status = excluded.status, "
            "merged_into = excluded.merged_into, updated_at = excluded.updated_at, "
            "state = excluded.state",
            [
                (str(u.id), str(u.app_id), u.external_id, _status(u),
                 str(u.merged_into) if u.merged_into else None, micros(u.modified_on),
                 user_to_json(u))
                for u in users
            ],
        )  # fmt: skip
        self._sync_aliases(users)
        self.writer.many(
            "INSERT INTO {profile_subscriptions} (subscription_id, app_id, user_id, type, status, "
            "updated_at, state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subscription_id) "
            "DO UPDATE SET user_id = excluded.user_id, status = excluded.status, "
            "updated_at = excluded.updated_at, state = excluded.state",
            [
                (str(s.id), str(s.app_id), str(s.owner_id) if s.owner_id else None, s.type.value,
                 "deleted" if s.deleted else "live", micros(s.modified_on),
                 subscription_to_json(s))
                for s in self.subscriptions.values()
                if s is not None
            ],
        )  # fmt: skip
        self._forget_erased()

    def _forget_erased(self) -> None:
        """An erased person leaves no row here: not the user, not the subscriptions
        whose keys went with them (the ownership read model keeps the shape)."""
        erasures = [e for e in self.events if isinstance(e, UserErased)]
        self.writer.many(
            "DELETE FROM {profile_users} WHERE user_id = ?",
            [(str(e.originator_id),) for e in erasures],
        )
        self.writer.many(
            "DELETE FROM {profile_subscriptions} WHERE subscription_id = ?",
            [(str(s),) for e in erasures for s in e.subscriptions],
        )
        self.erased = bool(erasures)

    def _sync_aliases(self, users: list[User]) -> None:
        """All removals before all additions: within a page an alias may pass from
        one user to another."""
        removed, added = [], []
        for user in users:
            old = self.identity_before.get(user.id, {})
            new = _identity(user) if user.is_live else {}
            removed += [
                (str(user.app_id), k, v, str(user.id)) for k, v in old.items() if new.get(k) != v
            ]
            added += [
                (str(user.app_id), k, v, str(user.id)) for k, v in new.items() if old.get(k) != v
            ]
        self.writer.many(
            "DELETE FROM {profile_aliases} WHERE app_id = ? AND label = ? AND alias_id = ? "
            "AND user_id = ?",
            removed,
        )
        self.writer.many(
            "INSERT INTO {profile_aliases} (app_id, label, alias_id, user_id) VALUES (?, ?, ?, ?)",
            added,
        )


def _status(user: User) -> str:
    return "retired" if user.merged_into else "deleted" if user.deleted else "live"


def _identity(user: User) -> dict[str, str]:
    identity = dict(user.aliases)
    if user.external_id is not None:
        identity["external_id"] = user.external_id
    return identity
