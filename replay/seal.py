"""Sealing a store written before personal values were sealed (the format of the
releases before 0.2): each event holding personal values in plain text is
rewritten in place with its values sealed under its subject's data key (made on
the way), page by page, each page in one transaction. A stopped run is resumed by
running it again: sealed events are skipped. Snapshots (derived data, possibly
in plain text) are dropped; they are taken again as aggregates grow.

This rewrites the stored bytes of old events, not their meaning: the decoded
events, positions and versions stay exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from idledger.domain.sealing import SEALED_KEY
from idledger.domain.service import LedgerLog

PAGE = 1000


@dataclass(frozen=True)
class Sealed:
    examined: int
    sealed: int
    snapshots_dropped: int


def seal_store(log: LedgerLog, progress: Callable[[int], None] | None = None) -> Sealed:
    recorder: Any = log.recorder
    sqlite = log.env.get("PERSISTENCE_MODULE") == "eventsourcing.sqlite"
    table = recorder.events_table_name
    if not sqlite:
        table = f'"{recorder.datastore.schema}"."{table}"'
    mark = "?" if sqlite else "%s"
    update = (
        f"UPDATE {table} SET state = {mark} "
        f"WHERE originator_id = {mark} AND originator_version = {mark}"
    )
    examined = sealed = 0
    start = 1
    while page := recorder.select_notifications(start=start, limit=PAGE):
        rows = []
        for notification in page:
            state = log.mapper.transcoder.decode(notification.state)
            event = log.mapper.to_domain_event(notification)
            if SEALED_KEY not in state and getattr(type(event), "PERSONAL", None):
                stored = log.mapper.to_stored_event(event, existing=True)  # type: ignore[call-arg]
                subject = UUID(str(notification.originator_id))
                rows.append(
                    (
                        stored.state,
                        subject.hex if sqlite else subject,
                        notification.originator_version,
                    )
                )
        if rows:
            with recorder.datastore.transaction(commit=True) as cursor:
                if sqlite:
                    cursor.execute("PRAGMA secure_delete = ON")
                cursor.executemany(update, rows)
        examined += len(page)
        sealed += len(rows)
        if progress is not None:
            progress(len(page))
        start = page[-1].id + 1
    dropped = _drop_snapshots(log, sqlite)
    recorder.wipe_freed_pages()
    return Sealed(examined, sealed, dropped)


def _drop_snapshots(log: LedgerLog, sqlite: bool) -> int:
    snapshots: Any = log.snapshots
    if snapshots is None:
        return 0
    recorder = snapshots.recorder
    table = recorder.events_table_name
    if not sqlite:
        table = f'"{recorder.datastore.schema}"."{table}"'
    with recorder.datastore.transaction(commit=True) as cursor:
        if sqlite:
            cursor.execute("PRAGMA secure_delete = ON")
        cursor.execute(f"SELECT COUNT(*) AS n FROM {table}")
        row = cursor.fetchone()
        cursor.execute(f"DELETE FROM {table}")
        return int(row["n"]) if row else 0
