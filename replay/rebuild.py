"""Rebuild read models from the log alone, beside the live ones; swap a rebuild
in atomically; verify the live read models against a fresh rebuild."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from domain.service import LedgerLog
from projections.engine import READ_MODELS, Follower, catch_up_together, is_sqlite, view_env
from projections.lock import ProjectionBusy, RunnerLock, postgres_conninfo

REBUILD = "_rebuild"
VERIFY = "_verify"
# A rebuild is one reader with the tables to itself: larger pages mean fewer commits
# (each page is one transaction per read model); memory stays bounded by the page.
REBUILD_PAGE_SIZE = 5000


@dataclass(frozen=True)
class Rebuilt:
    name: str
    events: int
    seconds: float
    position: int


@dataclass
class Difference:
    """Rows that only one side holds, per table."""

    only_live: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    only_rebuilt: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not any(self.only_live.values()) and not any(self.only_rebuilt.values())


def rebuild(
    store_env: dict[str, str],
    names: Iterable[str],
    *,
    variant: str = REBUILD,
    until: datetime | None = None,
    stop_at: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Rebuilt]:
    """Build each read model from position zero into fresh tables beside the live
    ones, reading the log once for all of them."""
    log = LedgerLog(store_env)
    followers: list[Follower] = []
    try:
        head = stop_at if stop_at is not None else log.recorder.max_notification_id() or 0
        for name in names:
            discard(store_env, name, variant)
            followers.append(
                Follower(log, store_env, name, page_size=REBUILD_PAGE_SIZE, variant=variant)
            )
        started = time.perf_counter()
        done = catch_up_together(followers, stop_at=head, until=until, progress=progress)
        seconds = time.perf_counter() - started
        return [Rebuilt(f.name, done, seconds, f.view.position()) for f in followers]
    finally:
        for follower in followers:
            follower.close()
        log.close()


def verify(store_env: dict[str, str], names: Iterable[str]) -> dict[str, Difference]:
    """Rebuild each read model to the live one's position and compare row by row."""
    differences = {}
    log = LedgerLog(store_env)
    try:
        for name in names:
            live = Follower(log, store_env, name)
            try:
                position = live.view.position()
                rebuild(store_env, [name], variant=VERIFY, stop_at=position)
                scratch = Follower(log, store_env, name, variant=VERIFY)
                try:
                    differences[name] = _compare(live.view.dump(), scratch.view.dump())
                finally:
                    scratch.close()
                    discard(store_env, name, VERIFY)
            finally:
                live.close()
    finally:
        log.close()
    return differences


def swap_in(store_env: dict[str, str], name: str, variant: str = REBUILD) -> None:
    """Replace the live read model with its rebuild, atomically, while holding the
    read model's runner lock (so no projector is writing it)."""
    lock = RunnerLock(name, view_env(store_env, name))
    try:
        lock.acquire()
    except ProjectionBusy as busy:
        raise ProjectionBusy(name) from busy
    try:
        if is_sqlite(store_env):
            _swap_files(store_env, name, variant)
        else:
            _swap_tables(store_env, name, variant)
    finally:
        lock.release()


def discard(store_env: dict[str, str], name: str, variant: str) -> None:
    """Remove a rebuild's tables (never the live ones)."""
    assert variant, "refusing to discard the live read model"
    if is_sqlite(store_env):
        for path in _sqlite_files(view_env(store_env, name, variant)):
            path.unlink(missing_ok=True)
        return
    with psycopg.connect(postgres_conninfo(store_env), autocommit=True) as connection:
        for table in _tables(name, variant):
            connection.execute(
                sql.SQL("DROP TABLE IF EXISTS {}.{}").format(
                    sql.Identifier(_schema(store_env)), sql.Identifier(table)
                )
            )


def _compare(live: dict[str, list[Any]], rebuilt: dict[str, list[Any]]) -> Difference:
    difference = Difference()
    for table in sorted(set(live) | set(rebuilt)):
        left, right = set(live.get(table, [])), set(rebuilt.get(table, []))
        difference.only_live[table] = sorted(left - right, key=repr)
        difference.only_rebuilt[table] = sorted(right - left, key=repr)
    return difference


def _sqlite_files(env: dict[str, str]) -> list[Path]:
    base = Path(env["SQLITE_DBNAME"])
    return [base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")]


def _swap_files(store_env: dict[str, str], name: str, variant: str) -> None:
    rebuilt = view_env(store_env, name, variant)["SQLITE_DBNAME"]
    live = view_env(store_env, name)["SQLITE_DBNAME"]
    if not Path(rebuilt).exists():
        raise FileNotFoundError(f"no rebuild of {name} to swap in ({rebuilt})")
    with sqlite3.connect(rebuilt) as connection:  # fold the WAL into the file first
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for stale in _sqlite_files(view_env(store_env, name))[1:]:
        stale.unlink(missing_ok=True)
    os.replace(rebuilt, live)
    for leftover in _sqlite_files(view_env(store_env, name, variant))[1:]:
        leftover.unlink(missing_ok=True)


def _tables(name: str, variant: str) -> list[str]:
    view = READ_MODELS[name][2]
    return [f"{short}{variant}" for short in view.TABLES] + [f"{name}{variant}_tracking"]


def _schema(store_env: dict[str, str]) -> str:
    return store_env.get("POSTGRES_SCHEMA") or "public"


def _swap_tables(store_env: dict[str, str], name: str, variant: str) -> None:
    schema = sql.Identifier(_schema(store_env))
    renames = list(zip(_tables(name, variant), _tables(name, ""), strict=True))
    indexes = [(f"{index}{variant}", index) for index in READ_MODELS[name][2].INDEXES]
    indexes += [(f"{old}_pkey", f"{new}_pkey") for old, new in renames]
    with psycopg.connect(postgres_conninfo(store_env)) as connection, connection.transaction():
        for old, new in renames:
            connection.execute(
                sql.SQL("DROP TABLE IF EXISTS {}.{}").format(schema, sql.Identifier(new))
            )
            connection.execute(
                sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
                    schema, sql.Identifier(old), sql.Identifier(new)
                )
            )
        for old, new in indexes:
            connection.execute(
                sql.SQL("ALTER INDEX IF EXISTS {}.{} RENAME TO {}").format(
                    schema, sql.Identifier(old), sql.Identifier(new)
                )
            )
