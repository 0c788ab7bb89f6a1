"""The application service's infrastructure: store, clock, retries, apps.

Every command runs in a fresh ``UnitOfWork``; when another writer wins an
optimistic-concurrency race the whole command is re-run on fresh state, a
bounded number of times, then reported as ``ConcurrencyConflict``. Commands
running at once share their commit (``domain.group_commit``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    EventStore,
    IntegrityError,
    InternalError,
    ProgrammingError,
    Recording,
)
from eventsourcing.utils import Environment, get_topic
from psycopg_pool import PoolTimeout

from idledger.domain.app import App, new_api_key
from idledger.domain.base import Aggregate, DomainEvent
from idledger.domain.errors import ConcurrencyConflict
from idledger.domain.group_commit import GroupCommit, GroupCommitSettings, Member
from idledger.domain.keystore import (
    KeyRing,
    KeyStore,
    PostgresLedgerRecorder,
    SQLiteLedgerRecorder,
    master_key,
)
from idledger.domain.mapper import JsonTranscoder, PydanticMapper
from idledger.domain.snapshot import (
    SNAPSHOT_INTERVAL,
    AggregateSnapshot,
    SnapshotStore,
    SnapshotWhenLong,
)
from idledger.domain.subscription import Subscription
from idledger.domain.unit_of_work import UnitOfWork
from idledger.domain.user import User

T = TypeVar("T")
R = TypeVar("R")
Clock = Callable[[], datetime]
MAX_ATTEMPTS = 12
DDL_ATTEMPTS = 5

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Committed:
    """What a command did and where its last event sits in the log."""

    position: int | None


@dataclass(frozen=True)
class NewApp(Committed):
    app_id: UUID
    api_key: str


@dataclass(frozen=True)
class UserOutcome(Committed):
    user_id: UUID
    created: bool = False


@dataclass(frozen=True)
class SubscriptionOutcome(Committed):
    subscription_id: UUID
    user_id: UUID
    status: str  # "created", "moved" or "unchanged"


class LedgerLog(Application[UUID]):
    """The ledger's event log, opened for reading: what projections follow.

    Users and subscriptions are snapshotted every ``SNAPSHOT_INTERVAL`` events (in
    the separate snapshots table, after the command's events are saved), so that
    loading one, now or as of an instant, folds at most an interval of events.
    """

    name = "idledger"  # names the PostgreSQL tables and env prefix: forever
    env: ClassVar[dict[str, str]] = {
        "MAPPER_TOPIC": get_topic(PydanticMapper),
        "TRANSCODER_TOPIC": get_topic(JsonTranscoder),
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        User: SNAPSHOT_INTERVAL,
        Subscription: SNAPSHOT_INTERVAL,
    }
    snapshot_class = AggregateSnapshot

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        # Personal values are sealed per subject (domain.sealing); the keys live
        # beside the events, written and destroyed in the events' transactions.
        self.keyring = KeyRing(master_key(self.env), cast(KeyStore, self.recorder))
        self.mapper.keyring = self.keyring  # type: ignore[attr-defined]
        self.recorder.keyring = self.keyring  # type: ignore[attr-defined]

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        environment = super().construct_env(name, env)
        recorder = (
            SQLiteLedgerRecorder
            if environment.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite"
            else PostgresLedgerRecorder
        )
        environment.setdefault("APPLICATION_RECORDER_TOPIC", get_topic(recorder))
        return environment

    def __init_subclass__(cls, **kwargs: object) -> None:
        # The library names each subclass after itself, which would silently point
        # it at new, empty tables; every ledger class shares the one name.
        super().__init_subclass__()
        cls.name = LedgerLog.name

    def construct_recorder(self) -> ApplicationRecorder:
        return bound_pool_wait(_retrying_ddl(super().construct_recorder), self.env)

    def construct_repository(self) -> Repository[UUID]:
        return SnapshotWhenLong(
            event_store=self.events,
            snapshot_store=self.snapshots,
            threshold=min(self.snapshotting_intervals.values()),
        )

    def construct_snapshot_store(self) -> EventStore[UUID]:
        recorder = bound_pool_wait(
            _retrying_ddl(lambda: self.factory.aggregate_recorder(purpose="snapshots")), self.env
        )
        return SnapshotStore(mapper=self.mapper, recorder=recorder)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """The library's save without its runtime Protocol checks for our own
        aggregates and events (``isinstance`` on a runtime-checkable Protocol costs
        more than the rest of collecting them)."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, Aggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            elif isinstance(obj, DomainEvent):
                processing_event.events.append(obj)
            else:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, kept
        return recordings

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        # Runs after the events are committed. A failure must neither fail the
        # command nor, as an IntegrityError, make ``_run`` apply it a second time.
        try:
            super()._take_snapshots(processing_event)
        except Exception:
            logger.warning("snapshot not taken; reads fold more events", exc_info=True)

    # Told how many events each save made durable (the API counts them for its
    # metrics); called through the library's hook, after the commit.
    on_appended: Callable[[int], object] | None = None

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        if self.on_appended is not None and recordings:
            self.on_appended(len(recordings))


POOL_WAIT = "POOL_WAIT_SECONDS"
DEFAULT_POOL_WAIT = 0.1


def bound_pool_wait(recorder: R, env: Mapping[str, str]) -> R:
    """Bound how long one attempt waits for a PostgreSQL connection. The library
    retries a failed statement 10 times (0.2 s apart) and its pool waits up to its
    whole connect timeout on each attempt, so an unreachable server held a request
    for minutes; with short waits a request is answered within about 3 s.

    The library gives its pool no connect timeout (POSTGRES_CONNECT_TIMEOUT is only
    the wait for a pooled connection), so each new connection could wait psycopg's
    default 130 s on a server that accepts and never answers, and closing the pool
    waited for them: the connect timeout is given to the pool's connections too."""
    pool = getattr(getattr(recorder, "datastore", None), "pool", None)
    if pool is not None and hasattr(pool, "timeout"):
        pool.timeout = float(env.get(POOL_WAIT) or DEFAULT_POOL_WAIT)
        connect_timeout = env.get("POSTGRES_CONNECT_TIMEOUT")
        if connect_timeout and isinstance(getattr(pool, "kwargs", None), dict):
            pool.kwargs["connect_timeout"] = connect_timeout
        _patient_while_busy(pool, float(connect_timeout or DEFAULT_BUSY_WAIT))
    return recorder


DEFAULT_BUSY_WAIT = 3.0
RECENT_FAILURE_SECONDS = 10.0
FAILURE_STATS = ("connections_errors", "connections_lost", "returns_bad")


def _patient_while_busy(pool: Any, busy_wait: float) -> None:
    """A short wait must not turn a busy pool into an outage. When a burst of
    requests has every connection at work and none has failed lately, the server
    is answering: a caller that timed out waits once more, up to ``busy_wait``.
    A pool whose connections fail (or that holds none) still fails fast."""
    quick = pool.getconn
    seen = {"failures": 0, "at": -RECENT_FAILURE_SECONDS}

    def failing_lately() -> bool:
        stats = pool.get_stats()
        failures = sum(stats.get(name, 0) for name in FAILURE_STATS)
        if failures != seen["failures"]:
            seen["failures"], seen["at"] = failures, time.monotonic()
        return not stats.get("pool_size") or (
            time.monotonic() - seen["at"] < RECENT_FAILURE_SECONDS
        )

    def getconn(timeout: float | None = None) -> Any:
        try:
            return quick(timeout)
        except PoolTimeout:
            if failing_lately():
                raise
            return quick(busy_wait)

    pool.getconn = getconn


def _retrying_ddl(construct: Callable[[], T]) -> T:
    # Workers starting together all run CREATE ... IF NOT EXISTS; PostgreSQL can
    # fail the losers ("tuple concurrently updated"). The DDL converges, so retry.
    for attempt in range(DDL_ATTEMPTS):
        try:
            return construct()
        except (InternalError, IntegrityError, ProgrammingError):
            if attempt == DDL_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.01, 0.1))
    raise AssertionError("unreachable")


class LedgerBase(LedgerLog):
    """Infrastructure shared by the command groups: clock, index key, retries."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        index_key: bytes,
        clock: Clock = utc_now,
        group_commit: GroupCommitSettings | None = None,
    ) -> None:
        if len(index_key) < 16:
            raise ValueError("index_key must be at least 16 bytes")
        super().__init__(env)
        self.index_key = index_key
        self.clock = clock
        self.races_lost = 0  # commands re-run after another writer saved first
        self._retry_turn = threading.Lock()  # re-runs after a lost race take turns
        self.group_commit = GroupCommit(
            self._write_together, group_commit or GroupCommitSettings.from_env(self.env)
        )

    def commit_changes(
        self, aggregates: Sequence[Aggregate], destroy_keys: Sequence[UUID]
    ) -> list[Recording[UUID]]:
        """A unit of work's commit: with other commands' (group commit), or alone."""
        if not self.group_commit.settings.enabled:
            return self.save(*aggregates, destroy_keys=list(destroy_keys))
        return self.group_commit.commit(aggregates, destroy_keys)

    def _write_together(self, members: Sequence[Member]) -> list[Recording[UUID]]:
        events = [event for member in members for event in member.events]
        aggregates = [a for member in members for a in member.aggregates.values()]
        destroy = [subject for member in members for subject in member.destroy_keys]
        if len(members) == 1:
            return self.save(*events, *aggregates, destroy_keys=destroy)
        # If the transaction rolls back, the same events are sealed and written
        # again one command at a time, and sealing a creation makes a new key:
        # the keys made by this attempt must not be used again.
        new = {UUID(str(e.originator_id)) for e in events if e.originator_version == 1}
        try:
            return self.save(*events, *aggregates, destroy_keys=destroy)
        except BaseException:
            self.keyring.unmake(new)
            raise

    def _run(self, app_id: UUID, command: Callable[[UnitOfWork], T]) -> tuple[T, int | None]:
        def attempt_once() -> tuple[T, int | None] | None:
            with self.group_commit.deciding():
                uow = UnitOfWork(self, self.index_key, app_id, self.clock())
                result = command(uow)
                try:
                    return result, uow.commit()
                except IntegrityError:
                    return None  # another writer saved one of our aggregates first

        for attempt in range(MAX_ATTEMPTS):
            if attempt == 0:
                outcome = attempt_once()
            else:
                # Back off with jitter so that racing writers spread out, then
                # re-run on fresh state.
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt - 1, 6)))
                # Re-runs take turns, within this process. Many writers on one
                # aggregate (say 100 concurrent adds to one user) would otherwise keep
                # re-running against each other, and some would lose MAX_ATTEMPTS
                # races in a row. Under the lock a re-run races only fresh first
                # attempts (which never wait for it), while the other losers queue
                # behind it. The back-off is slept before taking the lock, never while
                # holding it, so a sleeping writer holds nobody up. Writers in other
                # processes still race optimistically, bounded by MAX_ATTEMPTS.
                with self._retry_turn:
                    outcome = attempt_once()
            if outcome is not None:
                return outcome
            self.races_lost += 1
        raise ConcurrencyConflict(getattr(command, "__name__", "command"), MAX_ATTEMPTS)

    # Apps --------------------------------------------------------------------

    def create_app(self, name: str, app_id: UUID | None = None) -> NewApp:
        api_key = new_api_key()
        app = App.create(name, api_key, self.clock(), app_id)
        recordings = self.save(app)
        return NewApp(recordings[-1].notification.id, app.id, api_key)

    def rotate_api_key(self, app_id: UUID) -> NewApp:
        api_key = new_api_key()

        def rotate(uow: UnitOfWork) -> None:
            uow.app().rotate_api_key(api_key, uow.at)

        _, position = self._run(app_id, rotate)
        return NewApp(position, app_id, api_key)

    def get_app(self, app_id: UUID) -> App:
        return UnitOfWork(self, self.index_key, app_id, self.clock()).app()

    def read(self, app_id: UUID) -> UnitOfWork:
        """A read-only view for lookups straight from the log (no read models)."""
        return UnitOfWork(self, self.index_key, app_id, self.clock())
