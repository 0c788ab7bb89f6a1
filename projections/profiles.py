"""Current profiles: every user and subscription as it stands now, found by
onesignal_id, external_id, any alias, or subscription id.

Each row keeps the aggregate's state as JSON beside the indexed columns (the
JSON of ``projections.state``, which queries turn back into aggregates). Events
are applied to that JSON as plain rows by ``projections.profile_rows``, the row
form of the domain's own ``apply``; a test holds each to the domain's.
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from idledger.domain.subscription import Subscription
from idledger.domain.user import User, UserErased
from idledger.projections.base import ReadModel, micros_of
from idledger.projections.dead_letters import DEAD_LETTER_COLUMNS
from idledger.projections.profile_rows import (
    MUTATORS,
    SUBSCRIPTION,
    USER,
    Mutator,
    Row,
    dumps,
    fold,
    loads,
    mutator_for,
)
from idledger.projections.records import Recorded, open_all
from idledger.projections.sql import PostgresSqlView, SQLiteSqlView, SqlView, Writer
from idledger.projections.state import subscription_from_json, user_from_json


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
        # Ids (never values) of the aggregates an erasure forgot: see ``_forgotten``.
        "profile_erased": "aggregate_id TEXT PRIMARY KEY",
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
    TOPICS = frozenset(MUTATORS)

    @classmethod
    def reads(cls, topic: str) -> bool:
        return mutator_for(topic) is not None

    def open_page(self, writer: Writer) -> _ProfilesPage:
        return _ProfilesPage(writer)


class _ProfilesPage:
    """The rows one page touches, loaded at once (only aggregates created on an
    earlier page have a row to load), folded as plain JSON rows in log order
    (``projections.profile_rows``), then written back with their alias rows."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.steps: list[tuple[Recorded, Mutator]] = []
        self.erased = False  # the page erased someone: old pages of the file are wiped

    def apply(self, record: Recorded) -> None:
        mutator = mutator_for(record.topic)
        if mutator is not None:
            self.steps.append((record, mutator))

    def flush(self) -> None:
        steps = self.steps
        open_all([record for record, mutator in steps if mutator.personal])
        rows: dict[str, dict[str, Row | None]] = {USER: {}, SUBSCRIPTION: {}}
        stored: dict[str, list[str]] = {USER: [], SUBSCRIPTION: []}
        for record, mutator in steps:
            folded, key = rows[mutator.kind], record.originator_id
            if key not in folded:
                folded[key] = None
                if record.originator_version > 1:  # created on an earlier page
                    stored[mutator.kind].append(key)
        users, subscriptions = rows[USER], rows[SUBSCRIPTION]
        users.update(self._load("profile_users", "user_id", stored[USER]))
        identity_before = {
            key: _identity(row) if _is_live(row) else {}
            for key, row in users.items()
            if row is not None
        }
        subscriptions.update(
            self._load("profile_subscriptions", "subscription_id", stored[SUBSCRIPTION])
        )
        not_found = [
            key for kind, keys in stored.items() for key in keys if rows[kind][key] is None
        ]
        forgotten = self._forgotten(not_found)
        for record, mutator in steps:
            if record.originator_id in forgotten:
                continue
            folded = rows[mutator.kind]
            folded[record.originator_id] = fold(folded[record.originator_id], record, mutator)
        self._write_users([row for row in users.values() if row is not None], identity_before)
        self._write_subscriptions([row for row in subscriptions.values() if row is not None])
        self._forget_erased()

    def _forgotten(self, missing: list[str]) -> set[str]:
        """Of the aggregates with no row to fold onto, those an erasure forgot. An
        erasure writes ``Erased`` before the ``Deleted`` events of the subscriptions
        the person still held (one transaction, but a page may end between them):
        events of an erased aggregate change nothing here, it has no row any more.
        Any other missing row is an event order error, dead-lettered by the fold."""
        if not missing:  # the usual page: every row created before it was found
            return set()
        sql = "SELECT aggregate_id FROM {profile_erased} WHERE aggregate_id IN"
        rows = self.writer.all_in(sql, missing)
        return {row["aggregate_id"] for row in rows}

    def _load(self, table: str, key: str, ids: list[str]) -> dict[str, Row]:
        rows = self.writer.all_in(f"SELECT {key}, state FROM {{{table}}} WHERE {key} IN", ids)
        return {row[key]: loads(row["state"]) for row in rows}

    def _write_users(self, users: list[Row], identity_before: dict[str, dict[str, str]]) -> None:
        self.writer.many(
            "INSERT INTO {profile_users} (user_id, app_id, external_id, status, merged_into, "
            "updated_at, state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE "
            "SET external_id = excluded.external_id, status = excluded.status, "
            "merged_into = excluded.merged_into, updated_at = excluded.updated_at, "
            "state = excluded.state",
            [
                (u["id"], u["app_id"], u["external_id"], _status(u), u["merged_into"],
                 micros_of(u["modified_on"]), dumps(u))
                for u in users
            ],
        )  # fmt: skip
        self._sync_aliases(users, identity_before)

    def _write_subscriptions(self, subscriptions: list[Row]) -> None:
        self.writer.many(
            "INSERT INTO {profile_subscriptions} (subscription_id, app_id, user_id, type, status, "
            "updated_at, state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subscription_id) "
            "DO UPDATE SET user_id = excluded.user_id, status = excluded.status, "
            "updated_at = excluded.updated_at, state = excluded.state",
            [
                (s["id"], s["app_id"], s["owner_id"], s["type"],
                 "deleted" if s["deleted"] else "live", micros_of(s["modified_on"]), dumps(s))
                for s in subscriptions
            ],
        )  # fmt: skip

    def _forget_erased(self) -> None:
        """An erased person leaves no row here: not the user, not the subscriptions
        whose keys went with them (the ownership read model keeps the shape). Their
        ids (no value) are kept in ``profile_erased``: see ``_forgotten``."""
        erasures = [r for r, _ in self.steps if r.topic == UserErased.TOPIC]
        self.writer.many(
            "DELETE FROM {profile_users} WHERE user_id = ?",
            [(r.originator_id,) for r in erasures],
        )
        subscriptions = [(s,) for r in erasures for s in r.state["subscriptions"]]
        self.writer.many(
            "DELETE FROM {profile_subscriptions} WHERE subscription_id = ?", subscriptions
        )
        self.writer.many(
            "INSERT INTO {profile_erased} (aggregate_id) VALUES (?) ON CONFLICT DO NOTHING",
            [(r.originator_id,) for r in erasures] + subscriptions,
        )
        self.erased = bool(erasures)

    def _sync_aliases(self, users: list[Row], identity_before: dict[str, dict[str, str]]) -> None:
        """All removals before all additions: within a page an alias may pass from
        one user to another."""
        removed, added = [], []
        for user in users:
            old = identity_before.get(user["id"], {})
            new = _identity(user) if _is_live(user) else {}
            if old == new:
                continue
            app_id, user_id = user["app_id"], user["id"]
            removed += [(app_id, k, v, user_id) for k, v in old.items() if new.get(k) != v]
            added += [(app_id, k, v, user_id) for k, v in new.items() if old.get(k) != v]
        self.writer.many(
            "DELETE FROM {profile_aliases} WHERE app_id = ? AND label = ? AND alias_id = ? "
            "AND user_id = ?",
            removed,
        )
        self.writer.many(
            "INSERT INTO {profile_aliases} (app_id, label, alias_id, user_id) VALUES (?, ?, ?, ?)",
            added,
        )


def _is_live(user: Row) -> bool:
    return not user["deleted"] and user["merged_into"] is None


def _status(user: Row) -> str:
    return "retired" if user["merged_into"] else "deleted" if user["deleted"] else "live"


def _identity(user: Row) -> dict[str, str]:
    identity = dict(user["aliases"])
    if user["external_id"] is not None:
        identity["external_id"] = user["external_id"]
    return identity
