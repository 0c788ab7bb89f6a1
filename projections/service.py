"""Running the read models: in-process (the embedded default, beside the API) or
as a separate worker (`idledger project --follow`), several API processes then
sharing one worker on PostgreSQL.

Followers wake when the log grows: on PostgreSQL from the library's NOTIFY on
the events table, in-process from ``nudge()``; and in any case every
``poll_interval`` seconds, so a lost notification costs at most one interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import psycopg
from psycopg import sql

from idledger.domain.service import LedgerLog
from idledger.projections.dead_letters import describe
from idledger.projections.engine import (
    PAGE_SIZE,
    READ_MODELS,
    Follower,
    Lag,
    catch_up_together,
    is_sqlite,
)
from idledger.projections.lock import ProjectionBusy, RunnerLock, postgres_conninfo
from idledger.projections.mau import MauTables
from idledger.projections.ownership import OwnershipTables
from idledger.projections.profiles import ProfilesTables
from idledger.projections.quarantine import Retried, retry

log = logging.getLogger(__name__)
LAG_CHECK_INTERVAL = 10.0
LAG_WARNING_SECONDS = 30.0
RETRY_FIRST_PAUSE = 0.1
RETRY_MAX_PAUSE = 2.0
STANDBY_PAUSE = 5.0
STANDBY_CHECK = 0.1  # a writer's wait looks at the read models themselves this often


class LockLost(RuntimeError):
    """A runner lock died with its connection; the runner takes it again."""


class ReadModels:
    """The read models of one store, for queries (no runner needed to read)."""

    def __init__(
        self,
        store_env: dict[str, str],
        names: Iterable[str] = tuple(READ_MODELS),
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store_env = store_env
        self.log = LedgerLog(store_env)
        self.followers = {name: Follower(self.log, store_env, name, page_size) for name in names}

    @property
    def profiles(self) -> ProfilesTables:
        view = self.followers["profiles"].view
        assert isinstance(view, ProfilesTables), "profiles is not among the read models opened"
        return view

    @property
    def ownership(self) -> OwnershipTables:
        view = self.followers["ownership"].view
        assert isinstance(view, OwnershipTables), "ownership is not among the read models opened"
        return view

    @property
    def mau(self) -> MauTables:
        view = self.followers["mau"].view
        assert isinstance(view, MauTables), "mau is not among the read models opened"
        return view

    def wait_for(self, position: int | None, timeout: float = 5.0) -> bool:
        """Read-your-writes: wait (bounded) until every read model has ``position``."""
        deadline = time.monotonic() + timeout
        return all(
            f.view.wait_for(position, max(deadline - time.monotonic(), 0.0))
            for f in self.followers.values()
        )

    def lag(self) -> dict[str, Lag]:
        return {name: follower.lag() for name, follower in self.followers.items()}

    def dead_letters(self) -> dict[str, int]:
        """Events each read model set aside (see ``projections.dead_letters``)."""
        return {name: f.view.count_dead_letters() for name, f in self.followers.items()}

    def set_aside(self, first: int, last: int) -> list[str]:
        """The read models that dead-lettered an event between two positions."""
        return [
            name
            for name, f in self.followers.items()
            if f.view.has_dead_letter_between(first, last)
        ]

    def behind(self, position: int) -> list[str]:
        """The read models that have not yet applied ``position``."""
        return [name for name, f in self.followers.items() if f.view.position() < position]

    def close(self) -> None:
        for follower in self.followers.values():
            follower.close()
        self.log.close()


class Projector:
    """Owns the read models (one runner each, by lock) and keeps them caught up."""

    def __init__(self, models: ReadModels, poll_interval: float = 0.5) -> None:
        self.models = models
        self.poll_interval = poll_interval
        self.locks = {
            name: RunnerLock(name, follower.store_env)
            for name, follower in models.followers.items()
        }
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # why it is not projecting now, if it is not
        self._pause = RETRY_FIRST_PAUSE
        # Every read model holds the log up to here: writers waiting for their
        # position are woken by the catch-up that gets there, instead of polling.
        self._projected = 0
        self._caught_up = threading.Condition()
        # Up to here a catch-up found no read model holding any dead letter: a
        # writer of events before it need not ask whether one was set aside.
        self._clean_through = 0
        self._standing_by = False  # another runner projects the read models now

    def acquire(self, wait: float = 0.0) -> None:
        try:
            for lock in self.locks.values():
                lock.acquire(wait)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for lock in self.locks.values():
            lock.release()

    def run_once(self) -> int:
        """Catch every read model up with the log; return the events applied."""
        self.acquire()
        # A catch-up reads until a page comes back empty: everything in the log
        # before it began is then in every read model.
        head = self.models.log.recorder.max_notification_id() or 0
        followers = list(self.models.followers.values())
        # Woken again for events already projected (a NOTIFY after the nudge):
        # nothing to read, and no position to ask each read model for.
        done = catch_up_together(followers) if head > self._projected else 0
        self.error, self._pause, self._standing_by = None, RETRY_FIRST_PAUSE, False
        held = any(follower.held() for follower in followers)  # read once, then kept
        with self._caught_up:
            self._clean_through = 0 if held else head
            if head > self._projected:
                self._projected = head
                self._caught_up.notify_all()
        return done

    def none_set_aside(self, position: int) -> bool:
        """Whether no read model can have set aside an event up to ``position``."""
        with self._caught_up:
            return position <= self._clean_through

    def wait_for(self, position: int | None, timeout: float) -> bool:
        """Read-your-writes for in-process writers (who ``nudge()`` first): wait
        (bounded) until a catch-up has passed ``position``. Woken by the catch-up
        itself; the read models' own positions are checked too, in case another
        runner projects them now."""
        if position is None:
            return True
        deadline = time.monotonic() + timeout
        while True:
            with self._caught_up:
                if self._projected >= position:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                woken = self._caught_up.wait(min(remaining, STANDBY_CHECK))
            # Not projecting now (an outage, or another runner has the read models):
            # their own positions say whether the write is in.
            elsewhere = self.error is not None or self._standing_by
            if not woken and elsewhere and self.models.wait_for(position, 0.0):
                return True
        return self.models.wait_for(position, 0.0)

    def retry_dead_letters(self) -> dict[str, Retried]:
        """Apply the dead letters of every read model again (after a fix)."""
        self.acquire()
        return {name: retry(follower) for name, follower in self.models.followers.items()}

    def follow(self) -> None:
        """Keep catching up until ``stop_following()``."""
        listener = self._listen()
        next_check = time.monotonic() + LAG_CHECK_INTERVAL
        try:
            while not self._stop.is_set():
                self._wake.clear()
                self.run_once()
                if time.monotonic() >= next_check:
                    self._watch_lag()
                    next_check = time.monotonic() + LAG_CHECK_INTERVAL
                self._await_news(listener)
        finally:
            if listener is not None:
                listener.close()

    def nudge(self) -> None:
        """Tell the runner the log has grown (in-process writers call this)."""
        self._wake.set()

    def start(self) -> None:
        """Follow in a background thread (the embedded mode). Dead letters are
        retried first: a restart after a fix is how they are usually resolved."""
        self.acquire()
        self._retry_at_start()
        self._thread = threading.Thread(
            target=self.follow_until_stopped, name="projector", daemon=True
        )
        self._thread.start()

    def stop_following(self) -> None:
        self._stop.set()
        self._wake.set()

    def stop(self) -> None:
        self.stop_following()
        if self._thread is not None:
            self._thread.join()
        self.release()

    def _retry_at_start(self) -> None:
        try:
            for name, outcome in self.retry_dead_letters().items():
                if outcome.applied or outcome.still_held:
                    log.warning(
                        "read model %s: %d dead letters applied on retry, %d still held",
                        name, outcome.applied, outcome.still_held,
                    )  # fmt: skip
        except Exception as error:  # the store is down: the follow loop retries
            log.warning("dead letters not retried at start: %s", describe(error))

    def _watch_lag(self) -> None:
        """Writers outpacing the projector show here, whatever the wake-ups did."""
        if not all(lock.check() for lock in self.locks.values()):
            raise LockLost("a runner lock was lost with its connection")
        for name, lag in self.models.lag().items():
            if lag.seconds > LAG_WARNING_SECONDS:
                log.warning(
                    "read model %s is %d events (%.0f s) behind", name, lag.events, lag.seconds
                )

    def follow_until_stopped(self) -> None:
        """Follow until stopped, whatever happens: a store outage (or anything
        else) is reported in ``error`` (``/ready``), retried with a growing pause,
        and cleared by the first catch-up that succeeds, without a restart."""
        while not self._stop.is_set():
            try:
                self.follow()
            except ProjectionBusy:  # another runner took over while we were cut off
                self.error, self._standing_by = None, True
                log.info("read models are projected by another runner; standing by")
                self._stop.wait(STANDBY_PAUSE)
            except Exception as error:
                self.error = error
                log.warning(
                    "projector interrupted (%s); retrying in %.1f s", describe(error), self._pause
                )
                self._stop.wait(self._pause)
                self._pause = min(self._pause * 2, RETRY_MAX_PAUSE)
                for lock in self.locks.values():
                    lock.check()  # a lock lost with its connection is taken again

    def _listen(self) -> psycopg.Connection[tuple[object, ...]] | None:
        env = self.models.store_env
        if is_sqlite(env):
            return None
        connection = psycopg.connect(postgres_conninfo(env), autocommit=True)
        channel = self.models.log.recorder.channel_name  # type: ignore[attr-defined]
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return connection

    def _await_news(self, listener: psycopg.Connection[tuple[object, ...]] | None) -> None:
        if listener is None:
            self._wake.wait(self.poll_interval)
            return
        # Short slices, so that nudge() and stop_following() are heard promptly too.
        deadline = time.monotonic() + self.poll_interval
        while not self._wake.is_set() and time.monotonic() < deadline:
            if any(True for _ in listener.notifies(timeout=0.05, stop_after=1)):
                return
