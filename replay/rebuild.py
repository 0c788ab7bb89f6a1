"""Rebuild read models from the log alone, beside the live ones; swap a rebuild
in atomically; verify the live read models against a fresh rebuild."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from idledger.domain.service import LedgerLog
from idledger.projections import bulk
from idledger.projections.engine import (
    READ_MODELS,
    Follower,
    catch_up_together,
    is_sqlite,
    read_by_any,
    view_env,
)
from idledger.projections.lock import ProjectionBusy, RunnerLock, postgres_conninfo
from idledger.projections.records import LogReader

logger = logging.getLogger(__name__)

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
    progress: Callable[[float], None] | None = None,
    jobs: int = 1,
) -> list[Rebuilt]:
    """Build each read model from position zero into fresh tables beside the live
    ones, reading the log once for all of them; with ``jobs`` > 1, the read models
    are shared out among that many processes (each reads the log itself), unless
    some are built by set-based SQL (``projections.bulk``): that already runs beside
    this process's reading of the log, and a second process would only read the
    log again (measured slower on two cores)."""
    names = list(names)
    set_based_here = (
        until is None and not bulk.SET_BASED.isdisjoint(names) and bulk.store_allows(store_env)
    )
    if jobs > 1 and len(names) > 1 and not set_based_here:
        return _rebuild_in_processes(store_env, names, variant, until, stop_at, progress, jobs)
    log = LedgerLog(store_env)
    followers: list[Follower] = []
    try:
        head = _head(log, stop_at)
        for name in names:
            discard(store_env, name, variant)
            followers.append(_follower(log, store_env, name, variant))
        started = time.perf_counter()
        set_based = [f for f in followers if set_based_here and f.name in bulk.SET_BASED]
        event_by_event = [f for f in followers if f not in set_based]
        reader = LogReader(log, read_by_any)
        # PostgreSQL's next page is read while this one is applied: 15-25% less time
        # than waiting for it. SQLite's reading is in-process (the GIL): no gain,
        # measured, and more CPU.
        read_ahead = not is_sqlite(store_env)
        # The set-based SQL runs in the store (SQLite releases the GIL while it
        # steps, PostgreSQL is another process) beside this thread's own reading of
        # the log, which also tells whether the log is what the SQL assumes.
        building = _SetBased(set_based, log, head)
        building.start()
        try:
            if event_by_event:
                done = catch_up_together(
                    event_by_event, stop_at=head, until=until, progress=progress, reader=reader,
                    read_ahead=read_ahead,
                )  # fmt: skip
            else:
                done = _read_through(reader, head, REBUILD_PAGE_SIZE, progress)
        finally:
            building.join()
        for index, follower in enumerate(followers):
            if follower in set_based and (reader.irregular or follower not in building.built):
                # Built event by event after all, from fresh tables.
                follower.close()
                discard(store_env, follower.name, variant)
                followers[index] = _follower(log, store_env, follower.name, variant)
                redone = catch_up_together([followers[index]], stop_at=head, read_ahead=read_ahead)
                done = max(done, redone)
        seconds = time.perf_counter() - started
        return [Rebuilt(f.name, done, seconds, f.view.position()) for f in followers]
    finally:
        for follower in followers:
            follower.close()
        log.close()


def _follower(log: LedgerLog, store_env: dict[str, str], name: str, variant: str) -> Follower:
    return Follower(log, store_env, name, page_size=REBUILD_PAGE_SIZE, variant=variant)


class _SetBased(threading.Thread):
    """Builds read models by set-based SQL (``projections.bulk``); ``built`` lists
    those it built. One that it could not (the log is not what the SQL assumes, or
    anything else went wrong) is left to be built event by event."""

    def __init__(self, followers: list[Follower], log: LedgerLog, head: int) -> None:
        super().__init__(name="set-based rebuild", daemon=True)
        self.followers, self.log, self.head = followers, log, head
        self.built: list[Follower] = []

    def run(self) -> None:
        for follower in self.followers:
            build = bulk.BUILDERS[follower.name]
            try:
                build(follower.view, self.log.recorder, self.log.name, self.head)
            except Exception as error:  # built event by event instead, which says why
                logger.info("%s is rebuilt event by event: %s", follower.name, error)
                continue
            self.built.append(follower)


def _read_through(
    reader: LogReader, head: int, page_size: int, progress: Callable[[int], None] | None
) -> int:
    """Read and check the log up to ``head`` without applying it (for set-based
    rebuilds alone): stops at the first event that is not what the SQL assumes."""
    position, done = 0, 0
    while not reader.irregular and (rows := reader.rows(position + 1, page_size, head)):
        reader.decode(rows)
        position, done = rows[-1][0], done + len(rows)
        if progress is not None:
            progress(len(rows))
    return done


def _head(log: LedgerLog, stop_at: int | None) -> int:
    """Where a rebuild stops: ``stop_at``, else the log's last position now."""
    return stop_at if stop_at is not None else log.recorder.max_notification_id() or 0


# Relative cost per log event of each read model (measured with `python -m bench`),
# used to balance the processes of a parallel rebuild.
COST = {"profiles": 3, "mau": 2, "ownership": 1}


def share_out(names: list[str], jobs: int) -> list[list[str]]:
    """The read models in ``jobs`` groups of about equal cost, dearest first."""
    groups: list[list[str]] = [[] for _ in range(min(jobs, len(names)))]
    for name in sorted(names, key=lambda n: -COST.get(n, 1)):
        cheapest = min(groups, key=lambda group: sum(COST.get(n, 1) for n in group))
        cheapest.append(name)
    return groups


def _rebuild_in_processes(
    store_env: dict[str, str],
    names: list[str],
    variant: str,
    until: datetime | None,
    stop_at: int | None,
    progress: Callable[[float], None] | None,
    jobs: int,
) -> list[Rebuilt]:
    log = LedgerLog(store_env)
    try:
        head = _head(log, stop_at)
    finally:
        log.close()
    context = multiprocessing.get_context("spawn")
    results, ticks = context.Queue(), context.Queue()
    groups = share_out(names, jobs)
    workers = [
        context.Process(
            target=_rebuild_group, args=(store_env, group, variant, until, head, results, ticks)
        )
        for group in groups
    ]
    for worker in workers:
        worker.start()
    reports: list[Rebuilt] = []
    failures: list[str] = []
    pending = len(workers)
    while pending:
        try:
            outcome = results.get(timeout=0.2)
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers) and results.empty():
                failures.append("a rebuild process died without a report")
                break
        else:
            pending -= 1
            if isinstance(outcome, str):
                failures.append(outcome)
            else:
                reports += outcome
        while progress is not None and not ticks.empty():
            progress(ticks.get() / len(groups))  # every group reads the whole log
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError("; ".join(failures))
    return sorted(reports, key=lambda report: names.index(report.name))


def _rebuild_group(
    store_env: dict[str, str],
    names: list[str],
    variant: str,
    until: datetime | None,
    head: int,
    results: Any,
    ticks: Any,
) -> None:
    try:
        results.put(rebuild(store_env, names, variant=variant, until=until, stop_at=head,
                            progress=ticks.put))  # fmt: skip
    except Exception as error:  # reported to the parent, which raises it
        results.put(f"rebuilding {', '.join(names)}: {error!r}")


def verify(
    store_env: dict[str, str],
    names: Iterable[str],
    progress: Callable[[float], None] | None = None,
) -> dict[str, Difference]:
    """Rebuild each read model to the live one's position and compare row by row
    (``progress`` hears of the log events read, read model after read model)."""
    differences = {}
    log = LedgerLog(store_env)
    try:
        for name in names:
            live = Follower(log, store_env, name)
            try:
                position = live.view.position()
                rebuild(store_env, [name], variant=VERIFY, stop_at=position, progress=progress)
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
        connection.execute("PRAGMA synchronous=FULL")  # the rebuild wrote without syncing
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
