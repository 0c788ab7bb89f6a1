"""Dead letters: events a read model could not apply, kept aside so that one bad
event never stops a read model for every app.

When a page fails to apply with an error that is not the store's (an outage is
retried, never dead-lettered), the page is split until the failing event stands
alone; that event is recorded in the read model's dead-letter table, in the same
transaction as the tracking position that moves past it. From then on the
aggregate it belongs to is *held*: its later events are dead-lettered too (with
the reason "held"), so the read model never shows a state folded over a gap.
``retry`` applies a held aggregate's dead letters again, in log order, and drops
them once they apply.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from eventsourcing.persistence import InterfaceError, OperationalError
from pydantic import ValidationError

# Deterministic columns only (no wall-clock time): a rebuild dead-letters the same
# events with the same rows, so `verify` compares dead letters like any other row.
DEAD_LETTER_COLUMNS = (
    "position BIGINT PRIMARY KEY, originator_id TEXT NOT NULL, "
    "originator_version BIGINT NOT NULL, topic TEXT NOT NULL, error TEXT NOT NULL"
)
HELD = "held: an earlier event of this aggregate is dead-lettered"
MAX_ERROR_LENGTH = 300


@dataclass(frozen=True)
class DeadLetter:
    position: int
    originator_id: str
    originator_version: int
    topic: str
    error: str

    def row(self) -> tuple[int, str, int, str, str]:
        return (self.position, self.originator_id, self.originator_version, self.topic, self.error)

    @classmethod
    def from_row(cls, row: Any) -> DeadLetter:
        return cls(
            int(row["position"]), row["originator_id"], int(row["originator_version"]),
            row["topic"], row["error"],
        )  # fmt: skip


@dataclass(frozen=True)
class Undecodable:
    """A stored event that does not decode (an old release's or a damaged payload):
    every read model dead-letters it."""

    originator_id: UUID
    originator_version: int
    topic: str
    error: str


def is_store_failure(error: BaseException) -> bool:
    """The store did not answer (down, restarting, locked): retry later, never
    dead-letter. Everything else an event causes is the event's own problem."""
    return isinstance(
        error,
        OperationalError
        | InterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg_pool.PoolTimeout
        | sqlite3.OperationalError
        | ConnectionError
        | TimeoutError,
    )


def describe(error: BaseException) -> str:
    """The kind of error and its first line, without the values involved: a
    validation error lists its fields and rules, never its input (it may be
    personal data)."""
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['type']}"
            for problem in error.errors(include_input=False, include_url=False)
        )
        text = f"ValidationError: {problems}"
    else:
        first_line = (str(error).strip().splitlines() or [""])[0]
        text = f"{type(error).__name__}: {first_line}".rstrip(": ")
    return text[:MAX_ERROR_LENGTH]
