"""Read replicas: lookups and read-model queries answered by PostgreSQL hot standbys.

The read models are tables in the store's own database, so a hot standby fed by
PostgreSQL's streaming replication holds them all, at most a replay behind the
primary. Writes and the projector stay on the primary; each GET that answers
from the read models picks a source per request (``ReadReplicas.choose``):

- without ``X-Idledger-Min-Position`` a usable standby, in turn (eventual);
- with it (the ``X-Idledger-Position`` a write answered with), a usable standby
  whose read models have applied that position, waiting up to
  ``IDLEDGER_READ_WAIT_MS`` for one to get there; else the primary, which had
  it before the write answered (read-your-writes);
- no usable standby: the primary.

A standby is usable while its last probe answered and its read models are at
most ``IDLEDGER_READ_MAX_LAG`` seconds behind the primary's. A query that fails
on a standby is answered by the primary and sets the standby aside until the
next probe finds it well: a standby never causes a 5xx. ``X-Idledger-Read-From``
names the source of each answer (``primary`` or ``standby-<n>``, n counting the
entries of IDLEDGER_READ_URL from 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, cast

import psycopg
from eventsourcing.persistence import PersistenceError
from fastapi import Response

from idledger.api.errors import ApiError
from idledger.projections.dead_letters import describe
from idledger.projections.lock import postgres_conninfo
from idledger.projections.service import ReadModels
from idledger.projections.sql import SqlView

log = logging.getLogger(__name__)

POSITION_HEADER = "X-Idledger-Position"
MIN_POSITION_HEADER = "X-Idledger-Min-Position"
READ_FROM_HEADER = "X-Idledger-Read-From"
PRIMARY = "primary"
PROBE_INTERVAL = 0.5  # seconds between health and position probes of every standby
HISTORY_SECONDS = 10.0  # at least: how far back the primary's positions are remembered
FIRST_PAUSE = 0.001  # a read-your-writes wait polls the standby's position, backing off
MAX_PAUSE = 0.01
FRESH_FOR = 0.001  # a position read this recently is not read again (many waiters)
MAX_POSITION = 2**63 - 1
NOT_PROBED = "not probed yet"

# The response of the request being answered: a write puts its log position on it,
# a read the source it was answered from. Set by the request's runtime dependency.
_response: ContextVar[Response | None] = ContextVar("idledger_response", default=None)


def answering(response: Response) -> None:
    _response.set(response)


def tell_position(position: int | None) -> None:
    """Put a write's log position on its answer (what a later read may wait for)."""
    response = _response.get()
    if response is not None and position:
        response.headers[POSITION_HEADER] = str(position)


def _tell_source(name: str) -> None:
    response = _response.get()
    if response is not None:
        response.headers[READ_FROM_HEADER] = name


def min_position(value: str | None) -> int | None:
    """The position a read must see, from its header; a 400 for anything but a
    whole number from 0 up."""
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_POSITION:
        raise ApiError(
            400, "invalid-value",
            f"{MIN_POSITION_HEADER} must be a log position (a whole number from 0), "
            f"as a write's {POSITION_HEADER} gives it",
            MIN_POSITION_HEADER,
        )  # fmt: skip
    return int(text)


def position_query(models: ReadModels) -> Callable[[], int]:
    """Reads the position every read model of ``models`` has applied, in one query
    (no retries: a standby that does not answer fails fast and is set aside)."""
    views = [follower.view for follower in models.followers.values()]
    first = views[0]
    schema = first.datastore.schema  # type: ignore[attr-defined]
    parts = [
        f'COALESCE((SELECT MAX(notification_id) FROM "{schema}"."{view.tracking_table_name}" '  # type: ignore[attr-defined]
        "WHERE application_name = ?), 0)"
        for view in views
    ]
    sql = f"SELECT LEAST({', '.join(parts)}) AS position"
    names = [SqlView.app_name] * len(views)

    def read() -> int:
        row = first.one(sql, *names)
        return int(row["position"]) if row else 0

    return read


def flush_barrier(models: ReadModels) -> Callable[[], int]:
    """A transaction that commits synchronously, so flushes the WAL before it, and
    returns the position the read models of ``models`` held when it began.

    PostgreSQL flushes at commit only for a transaction that wrote WAL (one that
    merely took a transaction id commits asynchronously): a transactional logical
    message is the smallest write there is, needs no table and no privilege, and
    physical standbys just skip it."""
    read_position = position_query(models)
    datastore = next(iter(models.followers.values())).view.datastore  # type: ignore[attr-defined]

    def flush() -> int:
        position = read_position()
        with datastore.transaction(commit=True) as cursor:
            cursor.execute("SELECT pg_logical_emit_message(true, 'idledger.flush', '')")
        return position

    return flush


class _FailoverView:
    """A standby's read-model view: each query runs there and, if the standby
    fails, on the primary's view (the standby is set aside)."""

    def __init__(self, standby: Any, primary: Any, failed: Callable[[BaseException], None]):
        self._standby, self._primary, self._failed = standby, primary, failed

    def __getattr__(self, name: str) -> Any:
        on_standby = getattr(self._standby, name)
        if not callable(on_standby):
            return on_standby
        on_primary = getattr(self._primary, name)

        def query(*args: Any, **kwargs: Any) -> Any:
            try:
                return on_standby(*args, **kwargs)
            except PersistenceError as error:
                self._failed(error)
                _tell_source(PRIMARY)
                return on_primary(*args, **kwargs)

        self.__dict__[name] = query  # found here from now on, without __getattr__
        return query


class _FailoverModels:
    """The read models as a read sees them on a standby: ``profiles``, ``ownership``
    and ``mau`` query the standby (falling back to the primary); anything else
    (lag, dead letters, waits) is the primary's."""

    def __init__(
        self, standby: ReadModels, primary: ReadModels, failed: Callable[[BaseException], None]
    ):
        self.profiles = _FailoverView(standby.profiles, primary.profiles, failed)
        self.ownership = _FailoverView(standby.ownership, primary.ownership, failed)
        self.mau = _FailoverView(standby.mau, primary.mau, failed)
        self._primary = primary

    def __getattr__(self, name: str) -> Any:
        return getattr(self._primary, name)


class Standby:
    """One hot standby: its read models (opened read-only once it answers), its
    health and the newest position seen there."""

    def __init__(self, number: int, env: dict[str, str]) -> None:
        self.name = f"standby-{number}"
        # For logs and /ready: where it is, never its password.
        self.server = f"{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
        # The tables are the primary's, replicated: never create them (a standby is read-only).
        self.env = {**env, "CREATE_TABLE": "false"}
        self.models: ReadModels | None = None
        self.reads: ReadModels | None = None
        self.read_position: Callable[[], int] = lambda: 0
        self.position = 0
        self.checked_at = 0.0
        self.lag = 0.0
        self.problem: str | None = NOT_PROBED

    def open(self, primary: ReadModels, failed: Callable[[BaseException], None]) -> None:
        if self.models is None:
            # Opening the read models waits for a connection and leaves pools behind
            # when none comes: knock first, with one connection of our own.
            psycopg.connect(postgres_conninfo(self.env)).close()
            self.models = ReadModels(self.env)
            self.read_position = position_query(self.models)
            self.reads = cast(ReadModels, _FailoverModels(self.models, primary, failed))

    def usable(self, max_lag: float) -> bool:
        return self.problem is None and self.lag <= max_lag

    def refresh(self) -> int:
        """The standby's position, read now (unless read a moment ago)."""
        now = time.monotonic()
        if now - self.checked_at >= FRESH_FOR:
            self.position = max(self.position, self.read_position())
            self.checked_at = now
        return self.position

    def close(self) -> None:
        if self.models is not None:
            self.models.close()


class ReadReplicas:
    """The hot standbys of the store and the choice, per read, of where it is answered."""

    def __init__(
        self, envs: list[dict[str, str]], primary: ReadModels, wait_ms: int, max_lag: float
    ) -> None:
        self.standbys = [Standby(number, env) for number, env in enumerate(envs, 1)]
        self.primary = primary
        self.wait = wait_ms / 1000
        self.max_lag = max_lag
        self._primary_position = position_query(primary)
        # (when, position) of the primary's read models, oldest first: a standby at
        # position p is as far behind as the first sample beyond p is old.
        self._history: deque[tuple[float, int]] = deque()
        self._turn = itertools.count()
        self._flushed = 0  # the primary's read models are flushed (so streamed) up to here
        self._flush_lock: asyncio.Lock | None = None  # made on the event loop
        self._flush_barrier = flush_barrier(primary)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._probe_forever, name="read-replicas", daemon=True
        )

    def start(self) -> None:
        """Probe in the background (opening a standby waits for it to answer): reads
        go to the primary until a standby's first probe succeeds."""
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for standby in self.standbys:
            standby.close()

    async def choose(self, wanted: int | None) -> tuple[str, ReadModels]:
        """Where a read is answered (see the module doc): a source's name and its read models."""
        usable = [s for s in self.standbys if s.usable(self.max_lag)]
        if wanted is not None:
            usable = [s for s in usable if s.position >= wanted] or await self._wait_for(
                usable, wanted
            )
        if not usable:
            return PRIMARY, self.primary
        standby = usable[next(self._turn) % len(usable)]
        assert standby.reads is not None
        return standby.name, standby.reads

    async def _wait_for(self, candidates: list[Standby], wanted: int) -> list[Standby]:
        """The first standby to have applied ``wanted`` within the wait, if any. The
        position is read on the event loop (one short indexed query); the waiting
        between reads is asynchronous."""
        deadline = time.monotonic() + self.wait
        pause = FIRST_PAUSE
        flushed = False
        while candidates:
            for standby in candidates:
                try:
                    if standby.refresh() >= wanted:
                        return [standby]
                except PersistenceError as error:
                    self._set_aside(standby, error)
            candidates = [s for s in candidates if s.usable(self.max_lag)]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not candidates:
                break
            if not flushed:  # not there at the first look: have the primary send it now
                await self._flush_primary(wanted)
                flushed = True
                continue
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, MAX_PAUSE)
        return []

    async def _flush_primary(self, wanted: int) -> None:
        """Make the primary send what its read models hold up to ``wanted``.

        The projector commits read-model rows asynchronously (``synchronous_commit
        off``: they are derived data), and a primary streams only WAL it has flushed,
        which its WAL writer does within ``wal_writer_delay`` (200 ms): a write's rows
        reached an idle primary's standby about 150 ms later. A transaction that
        commits synchronously flushes all WAL before it, so one such commit (in a
        thread, one at a time, shared by every read waiting for a position it covers)
        sends them at once: 1 to 2 ms."""
        if wanted <= self._flushed:
            return
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            if wanted > self._flushed:
                try:
                    covered = await asyncio.to_thread(self._flush_barrier)
                except PersistenceError:
                    return  # the primary is down: its gate answers for it
                self._flushed = max(self._flushed, covered)

    def status(self) -> list[dict[str, Any]]:
        """Each standby as /ready reports it."""
        return [
            {
                "name": s.name,
                "server": s.server,
                "state": "down" if s.problem else "up" if s.usable(self.max_lag) else "behind",
                "position": s.position,
                "lag_seconds": round(s.lag, 3) if math.isfinite(s.lag) else None,
                **({"problem": s.problem} if s.problem else {}),
            }
            for s in self.standbys
        ]

    def _set_aside(self, standby: Standby, error: BaseException) -> None:
        if standby.problem in (None, NOT_PROBED):
            log.warning(
                "read replica %s (%s) set aside: %s; reads go elsewhere until it answers",
                standby.name, standby.server, describe(error),
            )  # fmt: skip
        standby.problem = describe(error)

    def _probe_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe()
            except Exception:  # never let the prober die: reads would stay where they are
                log.exception("read replicas not probed")
            self._stop.wait(PROBE_INTERVAL)

    def probe(self) -> None:
        """Sample the primary's position, then each standby's: its health and lag."""
        now = time.monotonic()
        # The primary down: its gate answers for it; the lags are kept as they were.
        with contextlib.suppress(PersistenceError):
            self._history.append((now, self._primary_position()))
        keep = max(2 * self.max_lag, HISTORY_SECONDS)
        while self._history and self._history[0][0] < now - keep:
            self._history.popleft()
        for standby in self.standbys:
            self._probe(standby)

    def _probe(self, standby: Standby) -> None:
        try:
            standby.open(self.primary, lambda error: self._set_aside(standby, error))
            standby.checked_at = 0.0
            position = standby.refresh()
        except Exception as error:  # whatever it is, the standby is not usable now
            self._set_aside(standby, error)
            return
        standby.lag = self._lag(position)
        if standby.problem is not None:
            again = log.info if standby.problem == NOT_PROBED else log.warning
            again("read replica %s (%s) in use", standby.name, standby.server)
            standby.problem = None

    def _lag(self, position: int) -> float:
        """Seconds since the primary's read models first held what the standby's do
        not: 0 when it has everything sampled, unbounded when it was already behind
        the oldest sample (how far is not known)."""
        if not self._history or position >= self._history[-1][1]:
            return 0.0
        if position < self._history[0][1]:
            return float("inf")
        newest = self._history[-1][0]
        for when, primary in self._history:
            if primary > position:
                return newest - when
        return 0.0
