"""Read-model tables on the library's tracking recorders, for SQLite and PostgreSQL.

A view writes its rows and its tracking position in one transaction: that is
what makes every projection exactly-once across crashes and restarts. SQL is
written once, with ``?`` placeholders and ``{table}`` names; each store's class
fills those in.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol
from urllib.parse import quote

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteConnection, SQLiteTrackingRecorder
from psycopg.sql import SQL, Composed

from idledger.projections.dead_letters import DeadLetter

Row = Any  # sqlite3.Row or psycopg's dict row: both are read by column name
CHUNK = 500  # values per IN (...) list: well under SQLite's bound-parameter limit
LOG_ALIAS = "idledger_log"  # the log's file, attached to a read model's for set-based rebuilds


def chunked(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Row | None: ...
    def fetchall(self) -> list[Row]: ...


_INSERT = re.compile(r"INSERT INTO \{(\w+)\} \(([\w, ]+)\) VALUES \([?, ]+\)")
_COLUMN = re.compile(r"(\w+) (TEXT|BIGINT|INTEGER)\b")


def column_types(tables: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each table's columns and their SQL types, from its column definitions."""
    return {short: dict(_COLUMN.findall(columns)) for short, columns in tables.items()}


def _as_arrays(sql: str, columns: dict[str, dict[str, str]]) -> str | None:
    """``INSERT INTO {t} (a, b) VALUES (?, ?) ...`` as ``INSERT INTO {t} (a, b)
    SELECT * FROM unnest(%b::text[], %b::bigint[]) ...`` (psycopg only); ``None``
    for any other statement."""
    insert = _INSERT.match(sql)
    if insert is None:
        return None
    table, listed = insert.groups()
    types = columns.get(table, {})
    names = [name.strip() for name in listed.split(",")]
    if not all(name in types for name in names):
        return None
    arrays = ", ".join(f"%b::{types[name]}[]" for name in names)  # binary: far cheaper to send
    return f"INSERT INTO {{{table}}} ({listed}) SELECT * FROM unnest({arrays}){sql[insert.end() :]}"


def _holds_nul(columns: list[list[Any]]) -> bool:
    return "\x00" in "".join(v for column in columns for v in column if type(v) is str)


class Writer:
    """Executes a view's SQL inside one transaction. ``columns`` (PostgreSQL):
    each table's column types, for inserting many rows as arrays."""

    def __init__(
        self, cursor: Cursor, render: Any, columns: dict[str, dict[str, str]] | None = None
    ) -> None:
        self._cursor = cursor
        self._render = render
        self._columns = columns

    def execute(self, sql: str, *params: Any) -> None:
        self._cursor.execute(self._render(sql), params)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for many rows. SQLite runs it row by row in C. psycopg
        would send one statement per row (pipelined, but with Python work per row
        and per value), so on PostgreSQL an insert of listed columns is sent once,
        its rows as one array per column. The rows' keys must then be distinct (an
        upsert may not touch a row twice in one statement): every caller writes
        one row per key."""
        if not rows:
            return
        arrays = _as_arrays(sql, self._columns) if self._columns is not None else None
        columns = [list(c) for c in zip(*rows, strict=True)] if arrays else []
        if arrays is None or _holds_nul(columns):  # psycopg refuses NUL itself, and says so
            self._cursor.executemany(self._render(sql), rows)
        else:
            self._cursor.execute(self._render(arrays), columns)

    def one(self, sql: str, *params: Any) -> Row | None:
        self._cursor.execute(self._render(sql), params)
        return self._cursor.fetchone()

    def all(self, sql: str, *params: Any) -> list[Row]:
        self._cursor.execute(self._render(sql), params)
        return self._cursor.fetchall()

    def all_in(self, sql: str, values: Sequence[Any]) -> list[Row]:
        """The rows of ``sql`` (ending in ``IN``) for each of ``values``, asked CHUNK
        at a time: a page's worth of keys in a few statements."""
        if self._columns is not None:  # PostgreSQL: the keys as one array
            return self.all(f"{sql.removesuffix(' IN')} = ANY(?)", list(values))
        rows: list[Row] = []
        for chunk in chunked(values):
            rows += self.all(f"{sql} ({', '.join(['?'] * len(chunk))})", *chunk)
        return rows


@dataclass
class Rebuilding:
    """A set-based rebuild's transaction: its writer, and the log position to
    commit with its rows (``None``: none)."""

    writer: Writer
    position: int | None = None


class SqlView(TrackingRecorder):
    """Mixed into a store's tracking recorder. Subclasses list their tables."""

    TABLES: ClassVar[dict[str, str]] = {}  # short name -> column definitions (dead letters too)
    DEAD_LETTERS: ClassVar[str]  # short name of the read model's dead-letter table
    INDEXES: ClassVar[dict[str, str]] = {}  # index name -> "ON {table} (columns)"
    SUFFIX: ClassVar[str] = ""  # set on a rebuild beside the live tables
    array_columns: dict[str, dict[str, str]] | None = None  # see ``Writer.many``
    app_name: ClassVar[str] = "idledger"

    def table_name(self, short: str) -> str:
        raise NotImplementedError

    def index_name(self, name: str) -> str:
        return f"{name}{self.SUFFIX}"

    def render(self, sql: str) -> str:
        return sql.format(**{short: self.table_name(short) for short in self.TABLES})

    def ddl(self) -> list[str]:
        tables = [
            f"CREATE TABLE IF NOT EXISTS {self.table_name(short)} ({columns})"
            for short, columns in self.TABLES.items()
        ]
        indexes = [
            f"CREATE INDEX IF NOT EXISTS {self.index_name(name)} {self.render(definition)}"
            for name, definition in self.INDEXES.items()
        ]
        return tables + indexes

    @contextmanager
    def writing(
        self,
        tracking: Tracking | None,
        dead_letters: Sequence[DeadLetter] = (),
        released: Sequence[int] = (),
    ) -> Iterator[Writer]:
        """Rows written in the block, new dead letters, released ones (by position)
        and the position are committed together (no position: a retry of dead
        letters that lie behind it).

        Commits here need not wait for the disk: a read model is derived from
        the durable log, and its rows and position are lost or kept together, so
        a crash just replays the last pages again (exactly once still holds)."""
        with self._write_transaction() as cursor:
            writer = Writer(cursor, self.render, self.array_columns)
            yield writer
            writer.many(
                f"INSERT INTO {{{self.DEAD_LETTERS}}} VALUES (?, ?, ?, ?, ?)",
                [letter.row() for letter in dead_letters],
            )
            writer.many(
                f"DELETE FROM {{{self.DEAD_LETTERS}}} WHERE position = ?",
                [(position,) for position in released],
            )
            if tracking is not None:
                self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]

    def rebuilding(self, events: Any, log_name: str) -> AbstractContextManager[Rebuilding]:
        """One transaction in which SQL may name the log's events table as
        ``{events}`` (``events``: the log's recorder; on SQLite its file is attached
        read-only), committed with the position the block sets, if any: for
        set-based rebuilds (``projections.bulk``)."""
        raise NotImplementedError

    def wipe_freed_pages(self) -> None:
        """After an erasure: leave no copy of deleted rows in the store's files.
        (PostgreSQL keeps dead tuples until VACUUM; the README says so.)"""

    def dead_letters(self) -> list[DeadLetter]:
        rows = self.all(f"SELECT * FROM {{{self.DEAD_LETTERS}}} ORDER BY position")
        return [DeadLetter.from_row(row) for row in rows]

    def count_dead_letters(self) -> int:
        row = self.one(f"SELECT COUNT(*) AS n FROM {{{self.DEAD_LETTERS}}}")
        return int(row["n"]) if row else 0

    def has_dead_letter_between(self, first: int, last: int) -> bool:
        sql = f"SELECT 1 AS x FROM {{{self.DEAD_LETTERS}}} WHERE position BETWEEN ? AND ? LIMIT 1"
        return self.one(sql, first, last) is not None

    def held_aggregates(self) -> set[str]:
        rows = self.all(f"SELECT DISTINCT originator_id FROM {{{self.DEAD_LETTERS}}}")
        return {row["originator_id"] for row in rows}

    def _write_transaction(self) -> Any:
        return self.datastore.transaction(commit=True)  # type: ignore[attr-defined]

    def reading(self) -> Any:
        return self.datastore.transaction(commit=False)  # type: ignore[attr-defined]

    def close_readers(self) -> None:
        """Close connections opened for queries (the library closes its own)."""

    def all(self, sql: str, *params: Any) -> list[Row]:
        with self.reading() as cursor:
            return Writer(cursor, self.render).all(sql, *params)

    def one(self, sql: str, *params: Any) -> Row | None:
        with self.reading() as cursor:
            return Writer(cursor, self.render).one(sql, *params)

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, sorted: for comparing two builds of a read model."""
        dumped = {}
        for short in self.TABLES:
            rows = self.all(f"SELECT * FROM {{{short}}}")
            # keys(): iterating a sqlite3.Row yields values, a dict row yields keys
            dumped[short] = sorted(tuple(row[key] for key in row.keys()) for row in rows)  # noqa: SIM118
        return dumped

    def position(self) -> int:
        return self.max_tracking_id(self.app_name) or 0

    def wait_for(self, position: int | None, timeout: float) -> bool:
        """Read-your-writes: block (up to ``timeout`` s) until ``position`` is projected."""
        if position is None:
            return True
        deadline = time.monotonic() + timeout
        pause = 0.002
        while self.position() < position:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return True


class SQLiteSqlView(SqlView, SQLiteTrackingRecorder):
    """Queries run on a read-only connection of their own thread, outside the
    library's pool: under concurrent lookups the pool's interlocking, not SQLite,
    was the cost (WAL lets readers run beside the one writer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._tuned: weakref.WeakSet[SQLiteConnection] = weakref.WeakSet()

    def table_name(self, short: str) -> str:
        return short

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Cursor]:
        db_name: str = self.datastore.pool.db_name
        if self.datastore.pool.is_sqlite_memory_mode:  # one shared in-memory database
            with super().reading() as cursor:
                yield cursor
            return
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                f"file:{quote(db_name)}?mode=ro", uri=True, isolation_level=None,
                check_same_thread=False,  # closed by close_readers, from any thread
            )  # fmt: skip
            connection.row_factory = sqlite3.Row
            self._local.connection = connection
            with self._readers_lock:
                self._readers.append(connection)
        cursor = connection.cursor()
        cursor.execute("BEGIN")  # one snapshot for every statement of the block
        try:
            yield cursor
        finally:
            cursor.execute("ROLLBACK")

    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        with self.datastore.get_connection(commit=True) as connection:
            self._tune(connection)
            with connection.transaction(commit=True) as cursor:
                yield cursor

    def _tune(self, connection: SQLiteConnection) -> None:
        # The safety level cannot change inside a transaction: set it once per
        # pooled connection. (A larger page cache bought ~2% and made the rebuild's
        # memory grow with the log until the cache filled: left at SQLite's default.)
        if connection not in self._tuned:
            # A rebuild beside the live file is thrown away if it does not finish
            # and made durable when swapped in: it never waits for the disk.
            safety = "OFF" if self.SUFFIX else "NORMAL"
            connection._sqlite_conn.execute(f"PRAGMA synchronous={safety}")
            # Deleted rows (an erased person's) are overwritten, not left in free pages.
            connection._sqlite_conn.execute("PRAGMA secure_delete=ON")
            self._tuned.add(connection)

    @contextmanager
    def rebuilding(self, events: Any, log_name: str) -> Iterator[Rebuilding]:
        log_file: str = events.datastore.pool.db_name
        table = f"{LOG_ALIAS}.{events.events_table_name}"
        with self.datastore.get_connection(commit=True) as connection:
            self._tune(connection)
            raw = connection._sqlite_conn
            # Read-only: a rebuild never writes the log (a URI the store was given is
            # taken as it is). Not inside a transaction: SQLite refuses to attach there.
            uri = log_file if log_file.startswith("file:") else f"file:{quote(log_file)}?mode=ro"
            raw.execute(f"ATTACH DATABASE ? AS {LOG_ALIAS}", (uri,))
            try:
                with connection.transaction(commit=True) as cursor:
                    render = self.render
                    writer = Writer(cursor, lambda sql: render(sql.replace("{events}", table)))
                    done = Rebuilding(writer)
                    yield done
                    if done.position is not None:
                        self._insert_tracking(cursor, Tracking(log_name, done.position))
            finally:
                raw.execute(f"DETACH DATABASE {LOG_ALIAS}")

    def wipe_freed_pages(self) -> None:
        # The WAL still holds the pages as they were before the delete: fold it
        # into the (securely deleted) file and truncate it.
        with self.datastore.get_connection(commit=True) as connection:
            connection._sqlite_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close_readers(self) -> None:
        with self._readers_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()

    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + self.ddl()


class PostgresSqlView(SqlView, PostgresTrackingRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.array_columns = column_types(self.TABLES)
        self.sql_create_statements.extend(Composed([SQL(ddl)]) for ddl in self.ddl())

    def table_name(self, short: str) -> str:
        return f'"{self.datastore.schema}"."{short}{self.SUFFIX}"'

    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO off")
            yield cursor

    def render(self, sql: str) -> str:
        return super().render(sql).replace("?", "%s")

    @contextmanager
    def rebuilding(self, events: Any, log_name: str) -> Iterator[Rebuilding]:
        table = f'"{events.datastore.schema}"."{events.events_table_name}"'
        with self._write_transaction() as cursor:
            render, columns = self.render, self.array_columns
            writer = Writer(cursor, lambda sql: render(sql.replace("{events}", table)), columns)
            done = Rebuilding(writer)
            yield done
            if done.position is not None:
                self._insert_tracking(cursor, Tracking(log_name, done.position))
