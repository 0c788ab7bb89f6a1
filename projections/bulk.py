"""Set-based rebuilds: the MAU and ownership read models computed by SQL from the
events table in one transaction, at the store's speed, instead of event by event
in Python.

Only from position zero, without ``--until``, and only for a log whose events
those read models read are what this release writes and in the order it writes
them. The caller (``replay.rebuild``) also reads the log with the projector's own
reader, which says whether any event of any read model needed the domain's
decoding (an older schema, a payload of another shape, an unknown topic): that is
what could make a dead letter or an upcast payload, which SQL does not reproduce,
so then the rows built here are thrown away and the read model is built event by
event. Checked here, in SQL, in the build's own transaction (``NotSetBased`` if
not, and nothing is committed):

- every subscription with an ownership event has exactly one ``Created``, at
  version 1, before its other ownership events in the log, and every session of a
  mobile push subscription comes after its ``Created`` (the incremental path
  dead-letters or drops what breaks this);
- every field they use has the JSON type the write path gives it, and every time
  is a UTC time in the form the write path writes (``...Z``, seconds or
  microseconds, from 1970 on), a real calendar time.

Memory stays flat: the scratch table and sorts are the store's (SQLite spills
them to a temporary file past its small cache); Python holds only MAU's per-day
sums.

Given that, the rows are those of the incremental path, row for row
(``tests/integration/test_replay_set_based.py`` compares them on both stores):

- ownership: each ``Created`` or ``OwnerChanged`` opens an interval (seq = its
  version, the subscription's app from its ``Created``), closed by the next of the
  subscription's ``OwnerChanged`` (its cause) or ``Deleted`` ("deleted") in log
  order, as ``_OwnershipPage`` does, whatever the pages;
- MAU: a mobile push subscription's active days are the days of its sessions;
  a day's count is the number of such subscriptions with an active day in the 30
  days ending on it, which is what the incremental runs add up to (each
  subscription's merged run of covered days adds one from its first day to 29
  days after its last), written for the days whose count is not zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.sqlite import SQLiteConnectionPool

from idledger.domain.subscription import (
    OwnerChanged,
    SessionRecorded,
    SubscriptionCreated,
    SubscriptionDeleted,
)
from idledger.projections.dead_letters import is_store_failure
from idledger.projections.mau import _MOBILE_PUSH, WINDOW_DAYS, per_day
from idledger.projections.sql import PostgresSqlView, SqlView, Writer

SET_BASED = frozenset({"mau", "ownership"})
CREATED, SESSION, OWNER, DELETED = 0, 1, 2, 3
TOPICS = {
    SubscriptionCreated.TOPIC: CREATED,
    SessionRecorded.TOPIC: SESSION,
    OwnerChanged.TOPIC: OWNER,
    SubscriptionDeleted.TOPIC: DELETED,
}
# The events' fields, extracted once into a scratch table (one row per event).
SCRATCH = "idledger_rebuild_events"


class NotSetBased(Exception):
    """The log holds something the set-based SQL would not reproduce exactly."""


def store_allows(store_env: dict[str, str]) -> bool:
    """A file-based SQLite log (attached to the read model's file) or PostgreSQL."""
    module = store_env.get("PERSISTENCE_MODULE")
    if module == "eventsourcing.postgres":
        return True
    database = store_env.get("SQLITE_DBNAME", "")
    return module == "eventsourcing.sqlite" and not SQLiteConnectionPool.detect_memory_mode(
        database
    )


class _Dialect:
    """The SQL that differs between the stores."""

    position = "rowid"
    json = "CAST(state AS TEXT)"

    def field(self, path: str) -> str:
        return f"json_extract(s, '$.{path}')"

    def oid(self) -> str:
        # As the log reader gives them: SQLite keeps 32 hex digits, read models dashed.
        o = "originator_id"
        return (
            f"CASE WHEN length({o}) = 32 THEN substr({o}, 1, 8) || '-' || substr({o}, 9, 4) "
            f"|| '-' || substr({o}, 13, 4) || '-' || substr({o}, 17, 4) || '-' "
            f"|| substr({o}, 21) ELSE {o} END"
        )

    def valid_time(self, column: str) -> str:
        # The forms pydantic writes for a UTC time. SQLite takes February 30th (as
        # March 2nd) where Python refuses it: a time must equal itself normalised.
        digits = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
        micros = "[0-9]" * 6
        return (
            f"({column} GLOB '{digits}Z' OR {column} GLOB '{digits}.{micros}Z')"
            f" AND {column} >= '1970' "
            f"AND datetime(julianday(substr({column}, 1, 19))) "
            f"= replace(substr({column}, 1, 19), 'T', ' ')"
        )

    def valid_day(self, column: str) -> str:
        day = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
        return (
            f"{column} GLOB '{day}T*Z' "
            f"AND date(julianday(substr({column}, 1, 10))) IS substr({column}, 1, 10)"
        )

    def micros(self, column: str) -> str:
        return (
            f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000 + "
            f"CASE WHEN length({column}) = 27 THEN CAST(substr({column}, 21, 6) AS INTEGER) "
            "ELSE 0 END"
        )

    def day(self, column: str) -> str:
        return f"CAST(julianday(substr({column}, 1, 10)) - 2440587.5 AS INTEGER)"

    no_flattening = ""

    # Whether ``strings_in_payload`` checks the fields' JSON types as it extracts
    # them (into ``ok``); otherwise the extracted values' SQL types tell (``all_text``).
    strings_checked_in_payload = False

    def strings_in_payload(self) -> str:
        return "NULL"

    def all_text(self, *columns: str) -> str:
        # json_extract gives a JSON string as TEXT, an object or array as its JSON
        # text: "{" or "[" first (so a string that starts so is refused too).
        return " AND ".join(
            f"(typeof({c}) = 'text' AND unicode({c}) NOT IN (123, 91))" for c in columns
        )

    def scratch(self) -> str:
        # Columns without a type keep the SQL type json_extract gave (checked above).
        # No key: rows are appended in log order (a key in subscription order made
        # every insert a random one), and sorted once where a query needs them so.
        return (
            f"CREATE TEMP TABLE {SCRATCH} (oid TEXT NOT NULL, raw NOT NULL, "
            "position INTEGER NOT NULL, version INTEGER NOT NULL, kind INTEGER NOT NULL, at, "
            "app_id, type, owner_id, cause, active_at, ok)"
        )

    def drop_scratch(self) -> str:
        return f"DROP TABLE temp.{SCRATCH}"


class _Postgres(_Dialect):
    position = "notification_id"
    json = "convert_from(state, 'UTF8')::jsonb"

    def field(self, path: str) -> str:
        *parents, name = path.split(".")
        return "s" + "".join(f" -> '{p}'" for p in parents) + f" ->> '{name}'"

    def oid(self) -> str:
        return "originator_id::text"

    # (No braces in these patterns: the view's SQL goes through ``str.format``.)
    def valid_time(self, column: str) -> str:
        n = "[0-9]"
        # (Nor question marks: they would be taken for placeholders.)
        digits = f"^{n * 4}-{n * 2}-{n * 2}T{n * 2}:{n * 2}:{n * 2}(Z|[.]{n * 6}Z)$"
        # An impossible date fails the cast below, and with it the whole statement.
        return f"{column} ~ '{digits}' AND {column} >= '1970'"

    def valid_day(self, column: str) -> str:
        n = "[0-9]"
        return f"{column} ~ '^{n * 4}-{n * 2}-{n * 2}T.*Z$'"

    def micros(self, column: str) -> str:
        return f"(extract(epoch from ({column})::timestamptz) * 1000000)::bigint"

    def day(self, column: str) -> str:
        return f"(left({column}, 10)::date - DATE '1970-01-01')"

    # Each payload parsed once: the subquery is not merged into the outer query
    # (which would repeat its expression for every field taken from it).
    no_flattening = "OFFSET 0"
    strings_checked_in_payload = True

    def strings_in_payload(self) -> str:
        text = "'string'"
        return (
            f"CASE kind WHEN {CREATED} THEN jsonb_typeof(s -> 'app_id') = {text} "
            f"AND jsonb_typeof(s -> 'spec' -> 'type') = {text} "
            f"AND jsonb_typeof(s -> 'owner_id') = {text} AND jsonb_typeof(s -> 'cause') = {text} "
            f"AND jsonb_typeof(s -> 'timestamp') = {text} "
            f"WHEN {SESSION} THEN jsonb_typeof(s -> 'active_at') = {text} "
            f"WHEN {OWNER} THEN jsonb_typeof(s -> 'owner_id') = {text} "
            f"AND jsonb_typeof(s -> 'cause') = {text} AND jsonb_typeof(s -> 'timestamp') = {text} "
            f"ELSE jsonb_typeof(s -> 'timestamp') = {text} END"
        )

    def scratch(self) -> str:
        return (
            f"CREATE TEMP TABLE {SCRATCH} (oid TEXT NOT NULL, raw UUID NOT NULL, "
            "position BIGINT NOT NULL, version BIGINT NOT NULL, kind INTEGER NOT NULL, "
            "at TEXT, app_id TEXT, type TEXT, "
            "owner_id TEXT, cause TEXT, active_at TEXT, ok BOOLEAN, "
            "PRIMARY KEY (oid, position)) ON COMMIT DROP"
        )

    def drop_scratch(self) -> str:
        return "SELECT 1"  # dropped at commit


def _dialect(view: SqlView) -> _Dialect:
    return _Postgres() if isinstance(view, PostgresSqlView) else _Dialect()


def last_position(writer: Writer, dialect: _Dialect, head: int) -> int | None:
    row = writer.one(f"SELECT MAX({dialect.position}) AS last FROM {{events}} WHERE "
                     f"{dialect.position} <= ?", head)  # fmt: skip
    return None if row is None or row["last"] is None else int(row["last"])


def _extract(writer: Writer, d: _Dialect, kinds: list[int], head: int) -> None:
    """The events of ``kinds`` up to ``head``, their fields extracted (each payload
    parsed once) and checked."""
    kind = " ".join(f"WHEN '{topic}' THEN {k}" for topic, k in TOPICS.items() if k in kinds)
    topics = [topic for topic, k in TOPICS.items() if k in kinds]
    marks = ", ".join(["?"] * len(topics))
    writer.execute(d.scratch())
    writer.execute(
        f"INSERT INTO {SCRATCH} (oid, raw, position, version, kind, at, app_id, type, "
        "owner_id, cause, active_at, ok) "
        f"SELECT oid, raw, position, version, kind, "
        f"CASE WHEN kind <> {SESSION} THEN {d.field('timestamp')} END, "
        f"CASE WHEN kind = {CREATED} THEN {d.field('app_id')} END, "
        f"CASE WHEN kind = {CREATED} THEN {d.field('spec.type')} END, "
        f"CASE WHEN kind IN ({CREATED}, {OWNER}) THEN {d.field('owner_id')} END, "
        f"CASE WHEN kind IN ({CREATED}, {OWNER}) THEN {d.field('cause')} END, "
        f"CASE WHEN kind = {SESSION} THEN {d.field('active_at')} END, {d.strings_in_payload()} "
        f"FROM (SELECT {d.oid()} AS oid, originator_id AS raw, {d.position} AS position, "
        "originator_version AS version, "
        f"CASE topic {kind} END AS kind, {d.json} AS s FROM {{events}} "
        f"WHERE topic IN ({marks}) AND {d.position} <= ? {d.no_flattening}) AS x",
        *topics, head,
    )  # fmt: skip
    strings = (
        "ok"
        if d.strings_checked_in_payload
        else f"CASE kind WHEN {CREATED} THEN {d.all_text('app_id', 'type', 'owner_id', 'cause')} "
        f"WHEN {OWNER} THEN {d.all_text('owner_id', 'cause')} ELSE TRUE END"
    )
    times = (
        f"CASE WHEN kind = {SESSION} THEN {d.valid_day('active_at')} ELSE {d.valid_time('at')} END"
    )
    bad = writer.one(
        f"SELECT 1 AS bad FROM {SCRATCH} WHERE (kind = {CREATED} AND version <> 1) "
        f"OR ({strings}) IS NOT TRUE OR ({times}) IS NOT TRUE LIMIT 1"
    )
    if bad is not None:
        raise NotSetBased("a field of an event is not what this release writes")
    disorder = writer.one(
        f"SELECT 1 AS bad FROM {SCRATCH} GROUP BY oid HAVING "
        f"COUNT(CASE WHEN kind = {CREATED} THEN 1 END) <> 1 "
        f"OR MIN(CASE WHEN kind = {CREATED} THEN position END) <> MIN(position) LIMIT 1"
    )
    if disorder is not None:
        raise NotSetBased("a subscription's events do not follow its creation")


@contextmanager
def _from_scratch(
    view: SqlView, events: Any, log_name: str, head: int, kinds: list[int]
) -> Iterator[tuple[Writer, _Dialect, int]]:
    """A rebuild's one transaction, with the log's events of ``kinds`` up to ``head``
    extracted into the scratch table (dropped after); the read model's position is
    the last event's."""
    d = _dialect(view)
    with view.rebuilding(events, log_name) as rebuilding:
        writer = rebuilding.writer
        last = last_position(writer, d, head)
        if last is None:
            raise NotSetBased("nothing to rebuild")
        _extract(writer, d, kinds, head)
        yield writer, d, last
        writer.execute(d.drop_scratch())
        rebuilding.position = last


def build_ownership(view: SqlView, events: Any, log_name: str, head: int) -> int | None:
    """Build the ownership read model (empty tables) from the log up to ``head``;
    returns the position written (``NotSetBased`` for an empty log)."""
    kinds = [CREATED, OWNER, DELETED]
    with _from_scratch(view, events, log_name, head, kinds) as (writer, d, last):
        writer.execute(
            "INSERT INTO {ownership} (subscription_id, seq, app_id, owner_id, started_at, "
            "cause, ended_at, ended_by) "
            f"SELECT oid, version, sub_app, owner_id, {d.micros('at')}, cause, "
            f"{d.micros('next_at')}, next_by FROM ("
            "SELECT oid, version, kind, owner_id, at, cause, "
            "FIRST_VALUE(app_id) OVER w AS sub_app, LEAD(at) OVER w AS next_at, "
            f"LEAD(CASE WHEN kind = {DELETED} THEN 'deleted' ELSE cause END) OVER w AS next_by "
            f"FROM {SCRATCH} WINDOW w AS (PARTITION BY oid ORDER BY position)) AS x "
            f"WHERE kind <> {DELETED}"
        )
    return last


def build_mau(view: SqlView, events: Any, log_name: str, head: int) -> int | None:
    """Build the MAU read model (empty tables) from the log up to ``head``."""
    with _from_scratch(view, events, log_name, head, [CREATED]) as (writer, d, last):
        mobile = ", ".join(f"'{kind}'" for kind in sorted(_MOBILE_PUSH))
        writer.execute(
            "INSERT INTO {mau_subscriptions} (subscription_id, app_id, type) "
            f"SELECT oid, app_id, type FROM {SCRATCH} WHERE type IN ({mobile})"
        )
        # The sessions of mobile push subscriptions, found through the log's key on
        # the aggregate (no scan of the whole log). A session before its
        # subscription's creation, or whose time is not in the form assumed, gets no
        # day: the NOT NULL column then refuses the whole statement.
        at = "e.active_at"
        try:
            _active_days(writer, d, at, mobile, head)
        except Exception as error:
            if is_store_failure(error):
                raise
            raise NotSetBased(f"a session is not what the SQL assumes: {error}") from error
        # Each subscription's merged runs of covered days: +1 on a run's first day, -1
        # on the day after its last (30 days after the run's last active day).
        window = WINDOW_DAYS
        ends = writer.all(
            "SELECT m.app_id, m.type, x.day, SUM(x.n) AS n FROM ("
            "SELECT a.subscription_id, a.day, 1 AS n FROM {mau_active_days} a "
            "WHERE NOT EXISTS (SELECT 1 FROM {mau_active_days} b WHERE "
            "b.subscription_id = a.subscription_id AND b.day < a.day "
            f"AND b.day >= a.day - {window - 1}) "
            f"UNION ALL SELECT a.subscription_id, a.day + {window}, -1 "
            "FROM {mau_active_days} a WHERE NOT EXISTS (SELECT 1 FROM {mau_active_days} b "
            "WHERE b.subscription_id = a.subscription_id AND b.day > a.day "
            f"AND b.day <= a.day + {window - 1})) AS x "
            "JOIN {mau_subscriptions} m ON m.subscription_id = x.subscription_id "
            "GROUP BY m.app_id, m.type, x.day"
        )
        runs: dict[tuple[str, str], Counter[int]] = {}
        for row in ends:
            runs.setdefault((row["app_id"], row["type"]), Counter())[int(row["day"])] += int(
                row["n"]
            )
        writer.many(
            "INSERT INTO {mau_counts} (app_id, day, type, active) VALUES (?, ?, ?, ?)",
            sorted(per_day(runs)),  # the live projection's sum, reused
        )
    return last


def _active_days(writer: Writer, d: _Dialect, at: str, mobile: str, head: int) -> None:
    writer.execute(
        "INSERT INTO {mau_active_days} (subscription_id, day) "
        f"SELECT DISTINCT m.oid, CASE WHEN e.position > m.position AND {d.valid_day(at)} "
        f"THEN {d.day(at)} END FROM {SCRATCH} AS m JOIN ("
        f"SELECT originator_id, position, {d.field('active_at')} AS active_at FROM ("
        f"SELECT originator_id, {d.position} AS position, {d.json} AS s FROM {{events}} "
        f"WHERE topic = ? AND {d.position} <= ? {d.no_flattening}) AS x) AS e "
        f"ON e.originator_id = m.raw WHERE m.type IN ({mobile})",
        SessionRecorded.TOPIC, head,
    )  # fmt: skip


BUILDERS: dict[str, Callable[[SqlView, Any, str, int], int | None]] = {
    "ownership": build_ownership,
    "mau": build_mau,
}
