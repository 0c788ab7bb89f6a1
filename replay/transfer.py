"""Export the ledger as JSON lines and import it into an empty store: events in
order, with their original aggregate ids, versions, times and schema versions,
so a ledger moves between SQLite and PostgreSQL and replays identically.

An export proves itself: a header line names the format version, the source
store, the fingerprint of its index key and the first position; a trailer line
after the events gives their count, the last position and the SHA-256 of the
event lines' exact bytes. Import checks all of it (and that every line validates)
before it writes anything, then writes every event in one transaction, keeping
a whole-ledger export's log positions exactly. Exports of the previous release
have neither header nor trailer: they are accepted only when asked (``legacy``).

Personal values travel sealed: an export holds ciphertext and never a key. The
keys move from the source store at import time (``keys_from``), as they are then,
so a person erased after the export stays erased in the imported copy. Lines of
the format before sealing (plain values) are sealed on the way in."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier
from pydantic import ValidationError

from idledger.domain import app as _app  # noqa: F401  (registers the event topics)
from idledger.domain import claim as _claim  # noqa: F401
from idledger.domain import subscription as _subscription  # noqa: F401
from idledger.domain import user as _user  # noqa: F401
from idledger.domain.errors import InvalidValue
from idledger.domain.keystore import SQLiteLedgerRecorder
from idledger.domain.mapper import event_from_state
from idledger.domain.sealing import SEALED_KEY
from idledger.domain.service import LedgerLog
from idledger.domain.values import refuse_unstorable

PAGE = 1000
FORMAT = 1
HEADER = "idledger_export"
TRAILER = "idledger_export_end"
MOVING = (
    "to move a ledger, run the import with the source's IDLEDGER_INDEX_KEY (a SQLite "
    "source without one keeps it in <database>.index-key), the same IDLEDGER_MASTER_KEY "
    "and --keys-from <source store URL> for the data keys"
)


class ImportRefused(ValueError):
    """Nothing was imported; the message says which line and why."""


@dataclass(frozen=True)
class Imported:
    events: int
    first_position: int | None
    last_position: int | None


@dataclass(frozen=True)
class Checked:
    """An export read and checked in full: the events to write and their positions
    in the source; ``exact``: the positions must be kept (a whole-ledger export)."""

    events: list[StoredEvent]
    positions: list[int]
    exact: bool


def index_key_fingerprint(key: bytes) -> str:
    """Names an index key without revealing it: equal fingerprints, equal keys."""
    return hmac.new(key, b"idledger index key fingerprint", hashlib.sha256).hexdigest()[:16]


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def export_lines(
    log: LedgerLog, app_id: UUID | None = None, *, index_key: bytes | None = None
) -> Iterator[str]:
    """A header line, one JSON object per event in log order, and a trailer line;
    with ``app_id``, only that app's aggregates (the app, its users and
    subscriptions, and the claims they hold). ``index_key`` is the store's
    (a ``Ledger``'s own by default): the header carries its fingerprint."""
    key = index_key if index_key is not None else getattr(log, "index_key", None)
    if not isinstance(key, bytes):
        raise TypeError("export_lines needs the store's index key (index_key=...)")
    store = "sqlite" if isinstance(log.recorder, SQLiteApplicationRecorder) else "postgresql"
    digest = hashlib.sha256()
    members: set[str] = set()
    count, last_position, start = 0, None, 1
    # Positions a PostgreSQL log skipped (a rolled-back write consumes its number):
    # listed in the trailer, so that a deleted line still shows as a gap.
    gaps: list[list[int]] = []
    header: dict[str, Any] = {
        HEADER: FORMAT,
        "store": store,
        "index_key_fingerprint": index_key_fingerprint(key),
        "app": None if app_id is None else str(app_id),
        "first_position": None,
    }
    while page := log.recorder.select_notifications(start=start, limit=PAGE):
        for notification in page:
            state = log.mapper.transcoder.decode(notification.state)
            if app_id is None or _belongs(notification, state, str(app_id), members):
                if count == 0:
                    header["first_position"] = notification.id
                    yield _line(header)
                line = _line(
                    {
                        "id": notification.id,
                        "originator_id": str(notification.originator_id),
                        "originator_version": notification.originator_version,
                        "topic": notification.topic,
                        "state": state,
                    }
                )
                digest.update(line.encode() + b"\n")
                if app_id is None and last_position and notification.id > last_position + 1:
                    gaps.append([last_position + 1, notification.id - 1])
                count, last_position = count + 1, notification.id
                yield line
        start = page[-1].id + 1
    if count == 0:
        yield _line(header)
    yield _line(
        {
            "idledger_export_end": FORMAT,
            "count": count,
            "last_position": last_position,
            "gaps": gaps,
            "sha256": digest.hexdigest(),
        }
    )


def _belongs(notification: Any, state: dict[str, Any], app_id: str, members: set[str]) -> bool:
    originator = str(notification.originator_id)
    if originator in members or originator == app_id:
        return True
    if state.get("app_id") == app_id or str(state.get("holder_id")) in members:
        members.add(originator)
        return True
    return False


def read_export(
    lines: Iterable[str],
    index_key: bytes,
    log: LedgerLog | None = None,
    *,
    legacy: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Checked:
    """Parse and check every line (header, trailer, digest, positions, payloads)
    before anything is written; the first problem found is an ``ImportRefused``.
    ``progress`` hears of the lines checked."""
    numbered = [
        (number, line.rstrip("\n"))
        for number, line in enumerate(lines, 1)
        if line.strip()  # blank lines are no events (and not in the digest)
    ]
    header = _header(numbered[0] if numbered else None, legacy)
    if header is None:  # a previous release's export, accepted with legacy=True
        events, positions = _events(
            numbered, log, whole=False, first=None, gaps=set(), progress=progress
        )
        return Checked(events, positions, exact=False)
    theirs, ours = header.get("index_key_fingerprint"), index_key_fingerprint(index_key)
    if theirs != ours:
        raise ImportRefused(
            f"the index keys differ (export {theirs}, this store {ours}): the uniqueness "
            f"claims are keyed by the source's index key and would be duplicated here; {MOVING}"
        )
    trailer = _trailer(numbered)
    body = numbered[1:-1]
    whole = header.get("app") is None
    first = header.get("first_position")
    gaps = {(int(a), int(b)) for a, b in trailer.get("gaps") or []}
    events, positions = _events(body, log, whole=whole, first=first, gaps=gaps, progress=progress)
    digest = hashlib.sha256()
    for _, line in body:
        digest.update(line.encode() + b"\n")
    if trailer.get("count") != len(events):
        raise ImportRefused(
            f"the trailer counts {trailer.get('count')} events but the export holds "
            f"{len(events)}: lines were added or deleted"
        )
    if trailer.get("last_position") != (positions[-1] if positions else None):
        raise ImportRefused(
            f"the trailer's last position is {trailer.get('last_position')}, the last "
            f"event's {positions[-1] if positions else None}: the export was altered"
        )
    if not hmac.compare_digest(str(trailer.get("sha256")), digest.hexdigest()):
        raise ImportRefused(
            "the events' SHA-256 does not match the trailer's: the export was altered "
            "after it was made"
        )
    return Checked(events, positions, exact=whole)


def _header(first: tuple[int, str] | None, legacy: bool) -> dict[str, Any] | None:
    try:
        header = json.loads(first[1]) if first else None
    except ValueError:
        header = None
    if isinstance(header, dict) and HEADER in header:
        if header[HEADER] != FORMAT:
            raise ImportRefused(
                f"line 1: export format {header[HEADER]!r} is unknown here (this release "
                f"reads format {FORMAT})"
            )
        return header
    if legacy:
        return None
    if first is None:
        raise ImportRefused("the export is empty: no header line")
    raise ImportRefused(
        f"line {first[0]}: no export header; an export of the previous release has none: "
        "import it with --legacy (its lines are checked, but there is no digest to check)"
    )


def _trailer(numbered: list[tuple[int, str]]) -> dict[str, Any]:
    number, line = numbered[-1]
    if len(numbered) < 2:
        raise ImportRefused("the export is truncated: no trailer line after the header")
    try:
        trailer = json.loads(line)
    except ValueError:
        raise ImportRefused(
            f"the export is truncated: its last line (line {number}) is cut short"
        ) from None
    if not isinstance(trailer, dict) or trailer.get(TRAILER) != FORMAT:
        raise ImportRefused(f"the export is truncated: no trailer line after line {number}")
    return trailer


def _events(
    numbered: list[tuple[int, str]],
    log: LedgerLog | None,
    *,
    whole: bool,
    first: Any,
    gaps: set[tuple[int, int]],
    progress: Callable[[int], None] | None = None,
) -> tuple[list[StoredEvent], list[int]]:
    events: list[StoredEvent] = []
    positions: list[int] = []
    seen: dict[int, int] = {}
    gaps_seen: set[tuple[int, int]] = set()
    last_id = 0
    for number, line in numbered:
        try:
            record = json.loads(line)
            if isinstance(record, dict) and (HEADER in record or TRAILER in record):
                raise ValueError("a header or trailer between events (exports joined?)")
            position = int(record["id"])
            if position in seen:
                raise ValueError(
                    f"position {position} repeats line {seen[position]}'s: a line is duplicated"
                )
            if position <= last_id:
                raise ValueError(
                    f"position {position} is not after {last_id}: lines are out of order"
                )
            if whole and not positions and position != first:
                raise ValueError(
                    f"position {position}, but the export starts at {first}: "
                    "the first event line is missing or out of place"
                )
            if whole and positions and position > last_id + 1:
                gaps_seen.add((last_id + 1, position - 1))
            if (
                whole
                and positions
                and position != last_id + 1
                and ((last_id + 1, position - 1) not in gaps)
            ):
                missing = f"{last_id + 1}" + (f"..{position - 1}" if position > last_id + 2 else "")
                raise ValueError(
                    f"position {position} follows {last_id}: position {missing} is missing "
                    "or out of place (a deleted or moved line?)"
                )
            originator_id = UUID(record["originator_id"])
            version = int(record["originator_version"])
            topic, state = str(record["topic"]), record["state"]
            if not isinstance(state, dict):
                raise ValueError("state must be a JSON object")
            refuse_unstorable(state, "state")  # the edge's text rules hold for imports too
            unsealed = {k: v for k, v in state.items() if k != SEALED_KEY}
            event = event_from_state(topic, originator_id, version, unsealed)  # validates
        except InvalidValue as error:
            raise ImportRefused(f"line {number}: {error.message}") from None
        except (ValueError, KeyError, TypeError, ValidationError) as error:
            raise ImportRefused(f"line {number}: {error}") from None
        except Exception as error:  # an unknown topic, an upcast that fails
            raise ImportRefused(f"line {number}: {type(error).__name__}: {error}") from None
        last_id, seen[position] = position, number
        positions.append(position)
        if progress is not None:
            progress(1)
        if log is not None and SEALED_KEY not in state and getattr(event, "PERSONAL", None):
            events.append(log.mapper.to_stored_event(event))  # plain values: seal them now
            continue
        encoded = json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()
        events.append(StoredEvent(originator_id, version, topic, encoded))
    if gaps_seen != gaps:
        raise ImportRefused(
            "the trailer's list of skipped positions does not match the events: the export "
            "was altered"
        )
    return events, positions


def import_events(
    log: LedgerLog,
    lines: Iterable[str],
    *,
    index_key: bytes,
    append: bool = False,
    keys_from: LedgerLog | None = None,
    legacy: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Imported:
    """All events in one transaction, or none. ``index_key`` is the target's: the
    export's must be the same. With ``keys_from``, the data keys of the imported
    subjects are copied from that store (both under one master key); ``legacy``
    accepts an export of the previous release (no header, trailer or digest);
    ``progress`` hears of the lines checked."""
    checked = check_import(
        log, lines, index_key=index_key, append=append, legacy=legacy, progress=progress
    )
    return write_import(log, checked, append=append, keys_from=keys_from)


def check_import(
    log: LedgerLog,
    lines: Iterable[str],
    *,
    index_key: bytes,
    append: bool = False,
    legacy: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Checked:
    """``import_events``'s first phase: every line read and checked, nothing written
    (``progress`` hears of the lines checked)."""
    if not append and (log.recorder.max_notification_id() or 0) > 0:
        raise ImportRefused("the store is not empty; use --append to add to it")
    return read_export(lines, index_key, log, legacy=legacy, progress=progress)


def write_import(
    log: LedgerLog,
    checked: Checked,
    *,
    append: bool = False,
    keys_from: LedgerLog | None = None,
    progress: Callable[[int], None] | None = None,
) -> Imported:
    """``import_events``'s second phase: the checked events in one transaction
    (``progress`` hears of the events written, page by page, before the commit)."""
    events = checked.events
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
    exact = checked.positions if checked.exact and not append else None
    try:
        positions = _insert(log, events, empty=not append, exact=exact, progress=progress)
    except ImportRefused:
        raise
    except Exception as error:  # e.g. an aggregate version already in the store
        raise ImportRefused(f"the store refused the events, nothing was written: {error}") from None
    return Imported(len(events), positions[0], positions[-1])


def _insert(
    log: LedgerLog,
    events: list[StoredEvent],
    *,
    empty: bool,
    exact: list[int] | None,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Insert in one transaction that also checks, before it commits, that the store
    was empty (unless appending) and that the events got the export's positions.
    Written a page at a time, for ``progress``: the transaction is still one."""
    recorder: Any = log.recorder
    pages = _pages(events, exact, progress)
    if isinstance(recorder, SQLiteLedgerRecorder):
        datastore: Any = recorder.datastore
        with datastore.transaction(commit=True) as cursor:
            if empty:
                cursor.execute(f"SELECT 1 FROM {recorder.events_table_name} LIMIT 1")
                _refuse_if_not_empty(cursor.fetchone())
            if exact is None:
                positions: list[int] = []
                for page, _ in pages:
                    positions += recorder._insert_events(cursor, page) or []
            else:  # the export's own positions, gaps included (the rowid is the position)
                recorder.write_keys(cursor, events, {})
                for page, page_positions in pages:
                    cursor.executemany(
                        f"INSERT INTO {recorder.events_table_name} (rowid, originator_id, "
                        "originator_version, topic, state) VALUES (?, ?, ?, ?, ?)",
                        [(p, UUID(str(e.originator_id)).hex, e.originator_version, e.topic,
                          e.state) for p, e in zip(page_positions, page, strict=True)],
                    )  # fmt: skip
                positions = list(exact)
            _check_positions(positions, exact)
        return positions
    table = SQL("{}.{}").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    with (
        recorder.datastore.get_connection() as connection,
        connection.transaction(),
        connection.cursor() as cursor,
    ):
        recorder._lock_table(cursor)  # writers wait; our emptiness check holds until commit
        if empty:
            cursor.execute(SQL("SELECT 1 FROM {} LIMIT 1").format(table))
            _refuse_if_not_empty(cursor.fetchone())
        recorder._insert_events(cursor, events)  # the data keys
        if exact is None:
            positions = []
            for page, _ in pages:
                recorder._insert_stored_events(cursor, page)
                positions += recorder._fetch_ids_after_insert_events(cursor, page)
        else:  # the export's own positions, gaps included; the sequence goes on after them
            for page, page_positions in pages:
                cursor.executemany(
                    SQL("INSERT INTO {} (notification_id, originator_id, originator_version, "
                        "topic, state) VALUES (%s, %s, %s, %s, %s)").format(table),
                    [(p, e.originator_id, e.originator_version, e.topic, e.state)
                     for p, e in zip(page_positions, page, strict=True)],
                )  # fmt: skip
            name = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s, true)",
                (name, exact[-1]),
            )
            recorder._notify_channel(cursor)
            positions = list(exact)
        _check_positions(positions, exact)
    return positions


def _pages(
    events: list[StoredEvent], exact: list[int] | None, progress: Callable[[int], None] | None
) -> Iterator[tuple[list[StoredEvent], list[int]]]:
    """The events a page at a time with their export positions (none unless
    ``exact``); ``progress`` hears of each page once it is written."""
    for start in range(0, len(events), PAGE):
        page = events[start : start + PAGE]
        yield page, exact[start : start + PAGE] if exact is not None else []
        if progress is not None:
            progress(len(page))


def _refuse_if_not_empty(row: Any) -> None:
    if row is not None:
        raise ImportRefused("the store is not empty; use --append to add to it")


def _check_positions(positions: list[int], exact: list[int] | None) -> None:
    if exact is not None and positions != exact:
        raise ImportRefused(
            f"this store would give the events positions {positions[0]}..{positions[-1]}, "
            f"not the export's {exact[0]}..{exact[-1]}: nothing was written"
        )
