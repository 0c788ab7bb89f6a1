"""What a running service holds: the ledger (writes), the read models (reads),
the gate that answers at once while the store is down and, in the embedded mode,
the projector that keeps the read models caught up; one of each per partition
(``idledger.partitions``), each request served by its app's partition."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from uuid import UUID

import psycopg

from idledger.api.errors import unavailable
from idledger.api.outage import StoreGate
from idledger.api.read_replicas import ReadReplicas, tell_position
from idledger.domain.app import App
from idledger.domain.errors import AppNotFound
from idledger.domain.ledger import Ledger
from idledger.domain.unit_of_work import first_written
from idledger.partitions import PartitionMap, make_partition_schema
from idledger.projections.dead_letters import describe, is_store_failure
from idledger.projections.lock import ProjectionBusy, postgres_conninfo
from idledger.projections.service import Projector, ReadModels
from idledger.settings import (
    CONNECT_TIMEOUT_SECONDS,
    Settings,
    open_ledger,
    read_store_envs,
    store_env,
)

log = logging.getLogger(__name__)


KEY_CACHE_SECONDS = 1.0
STARTUP_FIRST_PAUSE = 0.5
STARTUP_MAX_PAUSE = 5.0


class StoreUnreachable(RuntimeError):
    """The store did not answer within the start-up timeout."""


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    models: ReadModels
    projector: Projector | None
    gate: StoreGate
    replicas: ReadReplicas | None = None  # hot standbys for reads (IDLEDGER_READ_URL)
    partitions: Partitions | None = None  # all of them, this one included
    partition: int = 0
    _apps: dict[UUID, tuple[float, App]] = field(default_factory=dict)

    def app(self, app_id: UUID) -> App:
        """The app, from the log (of its partition), remembered for a second: keys are
        checked on every request, and a rotation elsewhere is seen within that second
        (at once here)."""
        owner = self.partitions.of_app(app_id) if self.partitions is not None else self
        cached = owner._apps.get(app_id)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        app = owner.ledger.get_app(app_id)
        owner._apps[app_id] = (time.monotonic(), app)
        return app

    def forget_app(self, app_id: UUID) -> None:
        self._apps.pop(app_id, None)

    def each_partition(self) -> list[Runtime]:
        return self.partitions.runtimes if self.partitions is not None else [self]

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """The runtime of partition 0 (``partitions`` holds every partition's)."""
        partition_map = PartitionMap.of(settings)
        runtimes: list[Runtime] = []
        try:
            for number in range(partition_map.count):
                runtimes.append(cls._open_one(partition_map.settings_of(settings, number), number))
        except BaseException:
            for runtime in runtimes:
                runtime.close()
            raise
        partitions = Partitions(partition_map, runtimes)
        for runtime in runtimes:
            runtime.partitions = partitions
            runtime.settings = settings  # the service's settings, the partition map included
        return runtimes[0]

    @classmethod
    def _open_one(cls, settings: Settings, partition: int = 0) -> Runtime:
        ledger, models = _open_store(settings, make_schema=partition > 0)
        projector: Projector | None = None
        if settings.embedded_projector:
            projector = Projector(models, settings.poll_interval)
            try:
                projector.start()
            except ProjectionBusy:
                # Another worker of this service (or `idledger project`) owns them.
                log.info("read models are projected by another runner")
                projector = None
        gate = StoreGate(probe=ledger.recorder.max_notification_id)
        replicas = _replicas(settings, models)
        return cls(settings, ledger, models, projector, gate, replicas, partition=partition)

    def written(self, position: int | None) -> None:
        """Read-your-writes: wake the projector, then wait (bounded) for it. A write
        whose read models are not there in time answers 503 (it is durable: the
        client retries and finds it), never an answer read from a stale model.

        A command that wrote nothing (``position`` None: a repeat, or the loser of
        a race, which found the winner's user or subscription through the ledger's
        claims) still answers from the read models, which may not hold the winner's
        write yet: it waits for the log head as it is now instead."""
        first = first_written()  # once: it resets what this request wrote
        wanted = position if position is not None else self.ledger.recorder.max_notification_id()
        timeout = self.settings.consistency_timeout
        if self.projector is not None:  # in-process: woken by the catch-up, no polling
            self.projector.nudge()
            projected = self.projector.wait_for(wanted or None, timeout)
        else:
            projected = self.models.wait_for(wanted or None, timeout)
        if not projected:
            assert wanted is not None
            raise unavailable("read-model-behind", self._behind(wanted, position is not None))
        tell_position(wanted)  # X-Idledger-Position: what a read after this one may wait for
        # Only what this request wrote can fail it: the head may hold others' events.
        # (An in-process projector knows when no read model holds any dead letter.)
        set_aside: list[str] = []
        if first and position:
            projector = self.projector
            if projector is None or not projector.none_set_aside(position):
                set_aside = self.models.set_aside(first, position)
        if set_aside:
            raise unavailable(
                "read-model-dead-letter",
                f"written at log positions {first}..{position}, but a read model "
                f"({', '.join(set_aside)}) could not apply an event of it and set it aside "
                "(`idledger dead-letters` lists it); retry once it is resolved",
            )

    def _behind(self, position: int, wrote: bool = True) -> str:
        why = ""
        if self.projector is not None and self.projector.error is not None:
            why = f" (projector: {describe(self.projector.error)})"
        what = "written at" if wrote else "nothing written; the log head is at"
        return (
            f"{what} log position {position}, but the read models "
            f"({', '.join(self.models.behind(position))}) have not applied it within "
            f"{self.settings.consistency_timeout:g} s{why}; retry the request"
        )

    def close(self) -> None:
        """Close every partition (this one last)."""
        for other in self.each_partition():
            if other is not self:
                other.partitions = None
                other.close()
        self._close_own()

    def _close_own(self) -> None:
        self.gate.close()
        if self.replicas is not None:
            self.replicas.close()
        if self.projector is not None:
            self.projector.stop()
        self.models.close()
        self.ledger.close()


class Partitions:
    """Every partition's runtime, and which one holds each app."""

    def __init__(self, partition_map: PartitionMap, runtimes: list[Runtime]) -> None:
        self.map = partition_map
        self.runtimes = runtimes
        self._located: dict[UUID, int] = {}
        self._lock = threading.Lock()

    def of_app(self, app_id: UUID) -> Runtime:
        """The partition holding the app (``AppNotFound`` if none does): its pin, else
        where its ``App`` aggregate is, searched once per process."""
        if len(self.runtimes) == 1:
            return self.runtimes[0]
        found = self._located.get(app_id)
        if found is None:
            found = self._search(app_id)
            with self._lock:
                self._located[app_id] = found
        return self.runtimes[found]

    def _search(self, app_id: UUID) -> int:
        """Look in each partition; one whose store fails is skipped (its gate closed),
        and if the app was found nowhere else, the request gets that partition's 503:
        the app may be there."""
        down: Runtime | None = None
        for number in self.map.search_order(app_id):
            partition = self.runtimes[number]
            if not partition.gate.is_open:
                down = partition
                continue
            try:
                partition.ledger.get_app(app_id)
            except AppNotFound:
                continue
            except Exception as error:
                if not is_store_failure(error):
                    raise
                partition.gate.trip(error)
                down = partition
                continue
            return number
        if down is not None:
            raise down.gate.refusal()
        raise AppNotFound(str(app_id))

    def known(self, app_id: str) -> Runtime | None:
        """The partition of an app already located by this process, if it was."""
        try:
            found = self._located.get(UUID(app_id))
        except ValueError:
            return None
        return None if found is None else self.runtimes[found]

    def for_new_app(self, app_id: UUID) -> Runtime:
        return self.runtimes[self.map.for_new_app(app_id)]


def check_store(settings: Settings) -> None:
    """Wait (up to ``startup_timeout``) until every partition's store answers, else
    raise ``StoreUnreachable``: what `idledger serve` does before it listens."""
    read_store_envs(settings)  # a wrong IDLEDGER_READ_URL is refused before anything opens
    partition_map = PartitionMap.of(settings)
    for number in range(partition_map.count):
        partition = partition_map.settings_of(settings, number)
        ledger, models = _open_store(partition, make_schema=number > 0)
        models.close()
        ledger.close()


def _replicas(settings: Settings, models: ReadModels) -> ReadReplicas | None:
    envs = read_store_envs(settings)
    if not envs:
        return None
    replicas = ReadReplicas(envs, models, settings.read_wait_ms, settings.read_max_lag)
    replicas.start()
    return replicas


def _open_store(settings: Settings, *, make_schema: bool = False) -> tuple[Ledger, ReadModels]:
    """Open the ledger and its read models, retrying an unreachable store for up
    to ``startup_timeout`` seconds, one log line per attempt (``make_schema``: a
    partition's PostgreSQL schema is made if missing)."""
    deadline = time.monotonic() + settings.startup_timeout
    pause = STARTUP_FIRST_PAUSE
    while True:
        ledger: Ledger | None = None
        try:
            _probe_postgres(settings, deadline - time.monotonic())
            if make_schema:
                make_partition_schema(settings.store_url)
            ledger = open_ledger(settings)
            return ledger, ReadModels(store_env(settings.store_url))
        except Exception as error:
            if ledger is not None:
                ledger.close()
            if not is_store_failure(error):
                raise
            if time.monotonic() + pause > deadline:
                raise StoreUnreachable(
                    f"the event store ({_where(settings)}) is unreachable: {describe(error)}"
                ) from None
            log.warning("event store unreachable (%s); retrying in %.1f s", describe(error), pause)
            time.sleep(pause)
            pause = min(pause * 2, STARTUP_MAX_PAUSE)


def _probe_postgres(settings: Settings, seconds_left: float) -> None:
    """Connect to a PostgreSQL store once, within the start-up time left (at most the
    connect timeout), before its pools are made: the library's pools connect with no
    time limit of their own (psycopg's 130 s), so against a server that accepts
    connections and never answers, one attempt at opening the ledger took 18 s."""
    env = store_env(settings.store_url)
    if env["PERSISTENCE_MODULE"] != "eventsourcing.postgres":
        return
    seconds = max(1, min(CONNECT_TIMEOUT_SECONDS, math.ceil(seconds_left)))
    psycopg.connect(postgres_conninfo(env), connect_timeout=seconds).close()


def _where(settings: Settings) -> str:
    """The store's location without its password."""
    env = store_env(settings.store_url)
    if "SQLITE_DBNAME" in env:
        return env["SQLITE_DBNAME"]
    return f"PostgreSQL at {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
