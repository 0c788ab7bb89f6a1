"""Export the ledger as JSON lines and import it into an empty store: events in
order, with their original aggregate ids, versions, times and schema versions,
so a ledger moves between SQLite and PostgreSQL and replays identically.

Personal values travel sealed: an export holds ciphertext and never a key. The
keys move from the source store at import time (``keys_from``), as they are then,
so a person erased after the export stays erased in the imported copy. Lines of
the format before sealing (plain values) are sealed on the way in."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from eventsourcing.persistence import StoredEvent
from pydantic import ValidationError

from domain import app as _app  # noqa: F401  (registers the event topics)
from domain import claim as _claim  # noqa: F401
from domain import subscription as _subscription  # noqa: F401
from domain import user as _user  # noqa: F401
from domain.errors import InvalidValue
from domain.mapper import event_from_state
from domain.sealing import SEALED_KEY
from domain.service import LedgerLog
from domain.values import refuse_unstorable

PAGE = 1000


class ImportRefused(ValueError):
    """Nothing was imported; the message says which line and why."""


@dataclass(frozen=True)
class Imported:
    events: int
    first_position: int | None
    last_position: int | None


def export_lines(log: LedgerLog, app_id: UUID | None = None) -> Iterator[str]:
    """One JSON object per event, in log order; with ``app_id``, only that app's
    aggregates (the app, its users and subscriptions, and the claims they hold)."""
    members: set[str] = set()
    start = 1
    while page := log.recorder.select_notifications(start=start, limit=PAGE):
        for notification in page:
            state = log.mapper.transcoder.decode(notification.state)
            if app_id is None or _belongs(notification, state, str(app_id), members):
                yield json.dumps(
                    {
                        "id": notification.id,
                        "originator_id": str(notification.originator_id),
                        "originator_version": notification.originator_version,
                        "topic": notification.topic,
                        "state": state,
                    },
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
        start = page[-1].id + 1


def _belongs(notification: Any, state: dict[str, Any], app_id: str, members: set[str]) -> bool:
    originator = str(notification.originator_id)
    if originator in members or originator == app_id:
        return True
    if state.get("app_id") == app_id or str(state.get("holder_id")) in members:
        members.add(originator)
        return True
    return False


def read_lines(lines: Iterable[str], log: LedgerLog | None = None) -> list[StoredEvent]:
    """Parse and validate every line before anything is written."""
    events: list[StoredEvent] = []
    last_id = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            position = int(record["id"])
            originator_id = UUID(record["originator_id"])
            version = int(record["originator_version"])
            topic, state = str(record["topic"]), record["state"]
            if not isinstance(state, dict):
                raise ValueError("state must be a JSON object")
            if position <= last_id:
                raise ValueError(f"id {position} is not after {last_id}: events must be in order")
            refuse_unstorable(state, "state")  # the edge's text rules hold for imports too
            unsealed = {k: v for k, v in state.items() if k != SEALED_KEY}
            event = event_from_state(topic, originator_id, version, unsealed)  # validates
        except InvalidValue as error:
            raise ImportRefused(f"line {number}: {error.message}") from None
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            raise ImportRefused(f"line {number}: {error}") from None
        except Exception as error:  # an unknown topic, an upcast that fails
            raise ImportRefused(f"line {number}: {type(error).__name__}: {error}") from None
        last_id = position
        if log is not None and SEALED_KEY not in state and getattr(event, "PERSONAL", None):
            events.append(log.mapper.to_stored_event(event))  # plain values: seal them now
            continue
        encoded = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()
        events.append(StoredEvent(originator_id, version, topic, encoded))
    return events


def import_events(
    log: LedgerLog,
    lines: Iterable[str],
    *,
    append: bool = False,
    keys_from: LedgerLog | None = None,
) -> Imported:
    """All events in one transaction, or none; with ``keys_from``, the data keys of
    the imported subjects are copied from that store (both under one master key)."""
    if not append and (log.recorder.max_notification_id() or 0) > 0:
        raise ImportRefused("the store is not empty; use --append to add to it")
    events = read_lines(lines, log)
    if not events:
        return Imported(0, None, None)
    if keys_from is not None:
        subjects = {UUID(str(event.originator_id)) for event in events}
        try:
            log.keyring.adopt(keys_from.recorder.load_all(subjects))  # type: ignore[attr-defined]
        except InvalidTag:
            raise ImportRefused(
                "the source store's data keys are wrapped under another master key: set "
                "IDLEDGER_MASTER_KEY to the source's"
            ) from None
    try:
        recordings = log.recorder.insert_events(events)
    except Exception as error:  # e.g. an aggregate version already in the store
        raise ImportRefused(f"the store refused the events, nothing was written: {error}") from None
    positions = [p for p in (recordings or []) if p is not None]
    return Imported(
        len(events), positions[0] if positions else None, positions[-1] if positions else None
    )
