"""Keeping read models caught up with the log.

A ``Follower`` reads the notification log from its view's tracking position, a
page at a time, and applies each page in one transaction with the position of
its last event: a crash anywhere leaves rows and position in step, so nothing is
lost or applied twice. One follower per read model may run at a time; a
``RunnerLock`` (a file lock on SQLite, an advisory lock on PostgreSQL) enforces it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from idledger.domain.service import LedgerLog, bound_pool_wait
from idledger.projections.base import ReadModel
from idledger.projections.dead_letters import DeadLetter, Undecodable
from idledger.projections.mau import MauProjection, PostgresMauView, SQLiteMauView
from idledger.projections.ownership import (
    OwnershipProjection,
    PostgresOwnershipView,
    SQLiteOwnershipView,
)
from idledger.projections.profiles import (
    PostgresProfilesView,
    ProfilesProjection,
    SQLiteProfilesView,
)
from idledger.projections.quarantine import apply_guarded
from idledger.projections.records import LogReader, PageItem, RawRow, Recorded
from idledger.projections.sql import SqlView

READ_MODELS: dict[str, tuple[type[ReadModel[Any]], type[SqlView], type[SqlView]]] = {
    "profiles": (ProfilesProjection, SQLiteProfilesView, PostgresProfilesView),
    "ownership": (OwnershipProjection, SQLiteOwnershipView, PostgresOwnershipView),
    "mau": (MauProjection, SQLiteMauView, PostgresMauView),
}
PAGE_SIZE = 1000


@cache
def read_by_any(topic: str) -> bool:
    """Every process decodes the events of every read model, whichever it feeds, so
    that a payload that does not decode is dead-lettered alike by each of them."""
    return any(model.reads(topic) for model, _, _ in READ_MODELS.values())


def is_sqlite(store_env: dict[str, str]) -> bool:
    return store_env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite"


def view_env(store_env: dict[str, str], name: str, variant: str = "") -> dict[str, str]:
    """On SQLite each read model has a file of its own beside the log (the library's
    SQLite tracking table is shared per file); on PostgreSQL, tables of its own.
    A ``variant`` (a rebuild beside the live one) gets its own file or table names."""
    env = dict(store_env)
    if is_sqlite(env):
        env["SQLITE_DBNAME"] = f"{env['SQLITE_DBNAME'].removesuffix('.db')}.{name}{variant}.db"
    return env


@cache
def view_class_for(base: type[SqlView], variant: str) -> type[SqlView]:
    if not variant:
        return base
    return type(f"{base.__name__}{variant.title()}", (base,), {"SUFFIX": variant})


@dataclass(frozen=True)
class Lag:
    events: int
    seconds: float


class Follower:
    """One read model, fed from the log."""

    def __init__(
        self,
        log: LedgerLog,
        store_env: dict[str, str],
        name: str,
        page_size: int = PAGE_SIZE,
        variant: str = "",
    ) -> None:
        if name not in READ_MODELS:
            raise ValueError(f"unknown read model {name!r}; choose from {sorted(READ_MODELS)}")
        projection_class, sqlite_view, postgres_view = READ_MODELS[name]
        env = view_env(store_env, name, variant)
        self.name = name
        self.variant = variant
        self.page_size = page_size
        self.log = log
        self.store_env = env
        self.factory = InfrastructureFactory.construct(Environment(f"{name}{variant}", env))
        view_class = view_class_for(sqlite_view if is_sqlite(env) else postgres_view, variant)
        recorder = self.factory.tracking_recorder(view_class)
        self.view = cast(SqlView, bound_pool_wait(recorder, env))
        self.projection = projection_class(self.view)
        self._held: set[str] | None = None

    def held(self) -> set[str]:
        """Aggregates with dead letters in this read model (read once, then kept)."""
        if self._held is None:
            self._held = self.view.held_aggregates()
        return self._held

    def hold(self, letters: Iterable[DeadLetter]) -> None:
        self.held().update(letter.originator_id for letter in letters)

    def forget_held(self) -> None:
        self._held = None

    def lag(self) -> Lag:
        position = self.view.position()
        head = self.log.recorder.max_notification_id() or 0
        if head <= position:
            return Lag(0, 0.0)
        (first_behind,) = self.log.recorder.select_notifications(start=position + 1, limit=1)
        recorded = self.log.mapper.to_domain_event(first_behind)
        seconds = (datetime.now(UTC) - recorded.timestamp).total_seconds()  # type: ignore[attr-defined]
        return Lag(head - position, max(seconds, 0.0))

    def close(self) -> None:
        self.view.close_readers()
        self.factory.close()


def _happened_by(event: Recorded | Undecodable, until: datetime) -> bool:
    return isinstance(event, Undecodable) or event.timestamp <= until


def _unseen(items: list[PageItem], position: int, until: datetime | None) -> list[PageItem]:
    if until is None and (not items or items[0][0] > position):
        return items  # the usual case: the whole page is new to this read model
    return [
        (number, event)
        for number, event in items
        if number > position and (until is None or _happened_by(event, until))
    ]


def catch_up_together(
    followers: list[Follower],
    *,
    stop_at: int | None = None,
    until: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    trusted: bool = True,
    reader: LogReader | None = None,
    read_ahead: bool = False,
) -> int:
    """Feed several read models of one log from a single read of it: each page is
    fetched and decoded once, then applied to every read model that has not seen
    it, each in its own transaction with its own position. Returns log events read.
    ``trusted=False``: every payload is validated as the write path validates it
    (``reader``: the caller's own, to learn what it met). ``read_ahead``: the next
    page is fetched by another thread while this one is applied (a rebuild: the
    store's work, and PostgreSQL's round trips, overlap with Python's; two pages at
    most are held)."""
    if not followers:
        return 0
    log, page_size = followers[0].log, followers[0].page_size
    if reader is None:
        reader = LogReader(log, read_by_any, trusted)
    done = 0
    positions = [follower.view.position() for follower in followers]
    with ThreadPoolExecutor(1, "read-ahead") if read_ahead else nullcontext() as ahead:
        following: Future[Sequence[RawRow]] | None = None
        while True:
            if following is None:
                rows = reader.rows(min(positions) + 1, page_size, stop_at)
            else:
                rows = following.result()
            if not rows:
                return done
            last = rows[-1][0]
            if ahead is not None:
                # Once this page is applied, the least position is ``last`` (the page
                # starts just after the least, so that read model gets all of it).
                following = ahead.submit(reader.rows, last + 1, page_size, stop_at)
            items = reader.decode(rows)
            for index, (follower, position) in enumerate(zip(followers, positions, strict=True)):
                if last > position:
                    apply_guarded(follower, _unseen(items, position, until), last)
                    positions[index] = last
            done += len(rows)
            if progress is not None:
                progress(len(rows))
