"""Several small aggregates' events in one query.

A command loads its app and the claims of the values it names (an external_id,
aliases, a push token) before deciding; one read each was a transaction (and on
PostgreSQL a round trip or two) apiece. Apps and claims are never snapshotted and
stay short, so their whole histories are read at once here and folded in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier


def stored_events_of(recorder: Any, ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
    """Every stored event of each aggregate, in version order (absent ids: no key)."""
    found: dict[UUID, list[StoredEvent]] = {}
    if not ids:
        return found
    if isinstance(recorder, SQLiteAggregateRecorder):
        rows = _sqlite_rows(recorder, ids)
    elif isinstance(recorder, PostgresAggregateRecorder):
        rows = _postgres_rows(recorder, ids)
    else:  # another store: one read per aggregate, as the repository does
        rows = [event for i in ids for event in recorder.select_events(i)]
    for event in rows:
        originator_id = event.originator_id
        key = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        found.setdefault(key, []).append(event)
    return found


def _sqlite_rows(recorder: SQLiteAggregateRecorder, ids: Sequence[UUID]) -> list[StoredEvent]:
    marks = ", ".join("?" * len(ids))
    statement = (
        f"SELECT originator_id, originator_version, topic, state FROM "
        f"{recorder.events_table_name} WHERE originator_id IN ({marks}) "
        "ORDER BY originator_id, originator_version"
    )
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement, [i.hex for i in ids])
        return [
            StoredEvent(
                originator_id=recorder.convert_originator_id(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"],
            )
            for row in cursor.fetchall()
        ]


# As the library's own reads: a busy pool or a dropped connection is retried.
@retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
def _postgres_rows(recorder: PostgresAggregateRecorder, ids: Sequence[UUID]) -> list[StoredEvent]:
    statement = SQL(
        "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
        "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
    ).format(
        schema=Identifier(recorder.datastore.schema),
        table=Identifier(recorder.events_table_name),
    )
    with recorder.datastore.get_connection() as connection, connection.cursor() as cursor:
        cursor.execute(statement, [list(ids)], prepare=True)
        return [
            StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in cursor.fetchall()
        ]
