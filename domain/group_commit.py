"""Group commit: concurrent commands of one process saved in one transaction.

A command decides on its own (loads, rules, new events), then hands its changed
aggregates here. The first to arrive leads: it waits a short, bounded window for
commands still deciding (never when none is), takes up to ``max_batch`` waiting
commits, and writes them in one transaction: one fsync on SQLite, one table lock
and one round trip on PostgreSQL for the lot. Commands arriving meanwhile queue
for the next batch, led by the first of them. Each caller returns only once its
own events are durable, with its own recordings (so its own log positions).

A batch that fails on an integrity error (a writer elsewhere saved one of its
aggregates first) or on any error of one member's own is written again member by
member, each in its own transaction: only the commands that really conflict
fail, and ``Ledger._run`` re-runs them on fresh state, as it does without group
commit. Two members that write the same version of one aggregate (one user, one
external_id claimed twice) cannot both succeed: the later one is failed at once,
and re-runs. A store failure (an outage) fails the batch and the commands queued
behind it at once: they answer within one round of the store's retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    Recording,
)

from idledger.domain.base import Aggregate, DomainEvent

# The store did not answer: every member is told, none is tried again alone.
STORE_FAILURES = (OperationalError, InterfaceError, ConnectionError, TimeoutError)
WINDOW_MS = "GROUP_COMMIT_WINDOW_MS"  # IDLEDGER_GROUP_COMMIT_WINDOW_MS
MAX_BATCH = "GROUP_COMMIT_MAX"  # IDLEDGER_GROUP_COMMIT_MAX
# The bounds of each setting (inclusive), checked here and by the service's Settings.
WINDOW_MS_BOUNDS = (0, 10_000)
MAX_BATCH_BOUNDS = (1, 10_000)


@dataclass(frozen=True)
class GroupCommitSettings:
    """``window_ms``: how long a batch waits for commands still deciding (it never
    waits when none is); ``max_batch``: commands per transaction, 1 turns it off."""

    window_ms: float = 1.0
    max_batch: int = 64

    def __post_init__(self) -> None:
        for name, value, (low, high) in (
            (WINDOW_MS, self.window_ms, WINDOW_MS_BOUNDS),
            (MAX_BATCH, self.max_batch, MAX_BATCH_BOUNDS),
        ):
            if not low <= value <= high:
                raise ValueError(f"IDLEDGER_{name} must be between {low} and {high}")

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GroupCommitSettings:
        """From the store environment (``IDLEDGER_`` prefix or without)."""

        def setting(name: str) -> str | None:
            return env.get(f"IDLEDGER_{name}") or env.get(name)

        defaults = cls()
        window, most = setting(WINDOW_MS), setting(MAX_BATCH)
        try:
            return cls(
                window_ms=float(window) if window else defaults.window_ms,
                max_batch=int(most) if most else defaults.max_batch,
            )
        except ValueError as wrong:
            raise ValueError(f"group commit settings: {wrong}") from None


@dataclass
class Member:
    """One command's changes, collected before the batch is written."""

    events: list[DomainEvent[Any]]
    aggregates: dict[UUID, Aggregate]
    destroy_keys: list[UUID]
    recordings: list[Recording[UUID]] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # set when it is handed the next batch to write

    @classmethod
    def of(cls, aggregates: Sequence[Aggregate], destroy_keys: Sequence[UUID]) -> Member:
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        return cls(events, {a.id: a for a in aggregates}, list(destroy_keys))

    def outcome(self) -> list[Recording[UUID]]:
        if self.error is not None:
            raise self.error
        return self.recordings


# Writes members in one transaction (their events in order, their keys to destroy)
# and returns the recordings in that order.
WriteTogether = Callable[[Sequence[Member]], list[Recording[UUID]]]


class GroupCommit:
    def __init__(self, write: WriteTogether, settings: GroupCommitSettings) -> None:
        self._write = write
        self.settings = settings
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[Member] = []
        self._leading = False
        self._deciding = 0  # commands between their start and their commit
        self._local = threading.local()  # whether this thread's command is deciding
        self.batches = 0  # transactions written (for tests and benchmarks)
        self.fallbacks = 0  # batches written again member by member

    @contextmanager
    def deciding(self) -> Iterator[None]:
        """Around a command, from its start to its commit: a leader waits (within
        the window) only while some command is still deciding, since it may commit
        soon. A command stops deciding when it joins the queue, or ends."""
        with self._lock:
            self._deciding += 1
        self._local.deciding = True
        try:
            yield
        finally:
            if self._local.deciding:
                self._local.deciding = False
                with self._lock:
                    self._deciding -= 1
                    self._arrived.notify_all()

    def commit(
        self, aggregates: Sequence[Aggregate], destroy_keys: Sequence[UUID] = ()
    ) -> list[Recording[UUID]]:
        """Save the aggregates' pending events with other callers' in one transaction;
        return this caller's recordings once they are durable. An integrity error
        of this caller's own is raised to it alone."""
        member = Member.of(aggregates, destroy_keys)
        with self._lock:
            self._queue.append(member)
            if getattr(self._local, "deciding", False):
                self._local.deciding = False
                self._deciding -= 1
            self._arrived.notify_all()
            leads = not self._leading
            self._leading = True
        if not leads:
            member.done.wait()
            if not member.leads:
                return member.outcome()
        self._lead()
        return member.outcome()

    def _lead(self) -> None:
        failure = self._write_batch(self._gather())
        with self._lock:
            if failure is not None:
                # The store is failing: the commands that queued meanwhile are told
                # now, instead of each batch waiting out the store's retries in turn.
                waiting, self._queue = self._queue, []
                for member in waiting:
                    member.error = failure
                    member.done.set()
            if self._queue:  # the next batch is led by the first waiting
                self._queue[0].leads = True
                self._queue[0].done.set()
            else:
                self._leading = False

    def _gather(self) -> list[Member]:
        """Up to ``max_batch`` waiting members, after waiting (bounded) for the ones
        still deciding."""
        deadline = time.monotonic() + self.settings.window_ms / 1000
        with self._lock:
            while len(self._queue) < self.settings.max_batch and self._deciding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            batch = self._queue[: self.settings.max_batch]
            del self._queue[: self.settings.max_batch]
        return batch

    def _write_batch(self, batch: list[Member]) -> BaseException | None:
        """Write the batch; return the store failure that stopped it, if one did."""
        together = _without_clashes(batch)
        try:
            self._record(together)
        except STORE_FAILURES as failure:
            for member in together:
                member.error = failure
            return failure
        except BaseException as error:
            if len(together) == 1:
                together[0].error = error
                return None
            # Someone in the batch conflicts (or cannot be written at all): each
            # alone, in its own transaction, so that only they fail.
            self.fallbacks += 1
            return self._write_alone(together)
        finally:
            for member in batch:
                member.done.set()
        return None

    def _write_alone(self, members: list[Member]) -> BaseException | None:
        for number, member in enumerate(members):
            try:
                self._record([member])
            except STORE_FAILURES as failure:
                for unwritten in members[number:]:
                    unwritten.error = failure
                return failure
            except BaseException as error:
                member.error = error
        return None

    def _record(self, members: list[Member]) -> None:
        recordings = self._write(members)
        self.batches += 1
        start = 0
        for member in members:
            member.recordings = recordings[start : start + len(member.events)]
            start += len(member.events)


def _without_clashes(batch: list[Member]) -> list[Member]:
    """The members that can be written together; a member writing a version of an
    aggregate that an earlier member writes too has lost that race already."""
    written: set[tuple[UUID, int]] = set()
    kept = []
    for member in batch:
        versions = {(e.originator_id, e.originator_version) for e in member.events}
        if versions & written:
            member.error = IntegrityError("another command of the batch saved it first")
            continue
        written |= versions
        kept.append(member)
    return kept
