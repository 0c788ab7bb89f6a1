"""OneSignal-style CSV import of users, strict.

Columns (a header row; each optional, but a row needs an identity or a channel):
``external_id``, ``email``, ``phone_number`` (E.164), ``language``, ``timezone_id``,
``country``, ``tags`` (a JSON object), ``tag:<key>`` and ``alias:<label>``.

The import runs in two passes. The first reads and checks every row: its shape
(as many fields as the header, no line break inside a quoted field, a closed
quote), its values by the ledger's own rules, and its identities against the
store and the rows before it. A bad row is a reject, listed with its line and
reason. When more rejects than ``max_rejects`` are found nothing is written.
Otherwise the second pass writes the good rows as normal ledger commands (a new
user, or an update of the user who holds the external_id, an earlier row's user
included), recorded with cause ``import`` and actor ``import:csv:<file>``; rows that
name no identity in common are written several at once (``_waves``). A row
can still be refused while it is written (another writer took its external_id
or an alias in between): it is then listed like any other reject, and the
report's counts say exactly what was written.

A file-level problem (not UTF-8, empty, an unknown or repeated column, an app
that is not in the store) is a ``CsvRefused`` before any row is read.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

from eventsourcing.sqlite import SQLiteApplicationRecorder
from pydantic import ValidationError

from idledger.domain.base import acting_as
from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, alias_namespace
from idledger.domain.errors import LedgerError
from idledger.domain.ledger import Ledger, ProfileChange
from idledger.domain.unit_of_work import UnitOfWork
from idledger.domain.values import (
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
    UserProperties,
    check_alias,
    check_tag,
    check_text,
)

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
KNOWN = ("external_id", "email", "phone_number", "language", "timezone_id", "country", "tags")
PREFIXES = ("tag:", "alias:")
ACCEPTED = ", ".join((*KNOWN, "tag:<key>", "alias:<label>"))
# Columns whose values are identifiers: no control character at all (tab included).
ID_COLUMNS = frozenset({"external_id", "email", "phone_number"})
_BOM = b"\xef\xbb\xbf"
_EOF_IN_QUOTES = "unexpected end of data"


class CsvRefused(Exception):
    """The file (or the app) is refused as a whole; nothing was read or written."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class RowRejected(ValueError):
    pass


@dataclass
class CsvReport:
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    max_rejects: int | None = None  # None: any number; the good rows are written
    written: bool = False  # the write pass ran (otherwise nothing was written)
    unreadable_from: int | None = None  # an unterminated quote: no row past this line
    stopped: tuple[int, str] | None = None  # an unexpected error stopped the write pass

    @property
    def too_many_rejects(self) -> bool:
        return self.max_rejects is not None and len(self.rejected) > self.max_rejects

    @property
    def failed(self) -> bool:
        return self.too_many_rejects or self.unreadable_from is not None or bool(self.stopped)


def read_csv_text(path: Path) -> str:
    """The file's text; one clear ``CsvRefused`` when it cannot be read or is not UTF-8
    (a UTF-8 byte order mark is allowed)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CsvRefused(f"cannot read {path}: {error.strerror or error}") from None
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = skip + error.start
        line = data.count(b"\n", 0, offset) + 1
        raise CsvRefused(
            f"{path.name} is not UTF-8: byte 0x{data[offset]:02X} at byte offset {offset} "
            f"(line {line}) is not valid UTF-8; the file must be UTF-8 (save it as UTF-8 "
            "and import again)"
        ) from None


def require_app(ledger: Ledger, app_id: UUID) -> None:
    """Refuse at once (exit code 1) an app that is not in the store."""
    try:
        ledger.get_app(app_id)
    except LedgerError:
        raise CsvRefused(f"app {app_id} not found in the store", exit_code=1) from None


def import_csv(
    ledger: Ledger,
    app_id: UUID,
    rows: Iterable[str],
    source: str,
    *,
    max_rejects: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> CsvReport:
    """Check every row, then, unless more than ``max_rejects`` were rejected (or the
    file cannot be read to its end), write the good ones. ``rows`` are the file's
    lines with their line endings (a file opened with ``newline=""``). ``progress``
    hears of each row checked, then of each row written."""
    require_app(ledger, app_id)
    report = CsvReport(max_rejects=max_rejects)
    tick = progress or _no_progress
    planned = _check_rows(ledger, app_id, _records(rows), source, report, tick)
    if not report.failed:
        report.written = True
        _write_rows(ledger, app_id, planned, source, report, tick)
    report.rejected.sort(key=lambda reject: reject[0])
    return report


# Reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    first: int  # the line it starts on
    last: int  # the line it ends on (later than first for a quoted line break)
    fields: list[str] | None  # None: csv could not parse it
    error: str = ""


def _records(rows: Iterable[str]) -> Iterator[_Record]:
    reader = csv.reader(rows, strict=True)
    last = 0
    while True:
        first = last + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            last = reader.line_num
            yield _Record(first, last, None, str(error))
            continue
        last = reader.line_num
        yield _Record(first, last, fields)


def _header(record: _Record | None, source: str) -> list[str]:
    if record is None:
        raise CsvRefused(
            f"{source} is empty: expected a header row naming its columns (accepted: {ACCEPTED})"
        )
    if record.fields is None:
        raise CsvRefused(f"{source} line {record.first}: malformed header row: {record.error}")
    columns = [name.strip() for name in record.fields]
    if not any(columns):
        raise CsvRefused(
            f"{source} line {record.first}: expected a header row naming its columns, "
            f"found a blank line (accepted: {ACCEPTED})"
        )
    unknown = [name for name in columns if not _known(name)]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise CsvRefused(f"unknown column{plural} {names} in {source}; accepted: {ACCEPTED}")
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        names = ", ".join(repr(name) for name in repeated)
        raise CsvRefused(f"column {names} appears more than once in the header of {source}")
    for name in columns:
        try:
            if name.startswith("alias:"):
                check_alias(name[6:], "x")
            elif name.startswith("tag:"):
                check_tag(name[4:], "x")
        except LedgerError as error:
            raise CsvRefused(f"column {name!r} in {source}: {error}") from None
    return columns


def _known(name: str) -> bool:
    if name in KNOWN:
        return True
    return any(name.startswith(prefix) and len(name) > len(prefix) for prefix in PREFIXES)


# Checking ------------------------------------------------------------------------


def _no_progress(_: int) -> None:
    return None


def _check_rows(
    ledger: Ledger,
    app_id: UUID,
    records: Iterator[_Record],
    source: str,
    report: CsvReport,
    tick: Callable[[int], None],
) -> list[tuple[int, ProfileChange]]:
    header = _header(next(records, None), source)
    identities = _Identities(ledger.read(app_id))
    planned: list[tuple[int, ProfileChange]] = []
    for record in records:
        if record.fields == []:
            continue  # a blank line
        report.rows_read += 1
        tick(1)
        try:
            change = _checked_row(header, record)
            identities.take(record.first, change)
        except (RowRejected, LedgerError, ValidationError) as error:
            report.rejected.append((record.first, _reason(error)))
            if record.fields is None and record.error == _EOF_IN_QUOTES:
                report.unreadable_from = record.first
        else:
            planned.append((record.first, change))
    return planned


def _checked_row(header: list[str], record: _Record) -> ProfileChange:
    if record.fields is None:
        if record.error == _EOF_IN_QUOTES:
            raise RowRejected(
                f"malformed row: a quoted field opened on line {record.first} is never closed "
                f"(unterminated quote), so lines {record.first}-{record.last} "
                "(the rest of the file) cannot be read"
            )
        raise RowRejected(f"malformed row: {record.error} (a quote inside a field is doubled)")
    if len(record.fields) != len(header):
        raise RowRejected(
            f"malformed row: {len(record.fields)} fields but the header has {len(header)} columns"
        )
    row = dict(zip(header, record.fields, strict=True))
    for column, value in row.items():
        if "\n" in value or "\r" in value:
            raise RowRejected(
                f"malformed row: {column} holds a line break (a quoted field spanning lines "
                f"{record.first}-{record.last})"
            )
        identifier = column in ID_COLUMNS or column.startswith("alias:")
        check_text(column, value, identifier=identifier)
    change = _change(row)
    if change.external_id is None and not change.aliases and not change.subscriptions:
        raise RowRejected("a row needs an external_id, an alias, an email or a phone_number")
    change.check()
    for key, value in change.tags.items():
        check_tag(key, value)
    return change


class _Identities:
    """Who each row's external_id and aliases would belong to, so that a conflict is
    a reject before anything is written: the store's claims, then the rows before."""

    def __init__(self, view: UnitOfWork) -> None:
        self._view = view
        self._taken: dict[tuple[str, str], UUID | int] = {}  # int: the line of a new user

    def take(self, line: int, change: ProfileChange) -> None:
        target: UUID | int = line
        if change.external_id is not None:
            held = self._holder(EXTERNAL_ID_NAMESPACE, change.external_id)
            if isinstance(held, UUID):
                self._view.user(held)  # a deleted or retired user: the ledger's error
            target = line if held is None else held
        wanted = {label: (alias_namespace(label), v) for label, v in change.aliases.items()}
        for label, claim in wanted.items():
            held = self._holder(*claim)
            if held is not None and held != target:
                owner = f"the user of line {held}" if isinstance(held, int) else "another user"
                raise RowRejected(f"alias {label} {claim[1]!r} already belongs to {owner}")
        if change.external_id is not None:
            self._taken[(EXTERNAL_ID_NAMESPACE, change.external_id)] = target
        for claim in wanted.values():
            self._taken[claim] = target

    def _holder(self, namespace: str, value: str) -> UUID | int | None:
        if (namespace, value) in self._taken:
            return self._taken[(namespace, value)]
        return self._view.holder(namespace, value)


def _change(row: dict[str, str]) -> ProfileChange:
    value = {k: v.strip() for k, v in row.items()}
    tags = _tags(value.get("tags", ""))
    tags.update({k[4:]: v for k, v in value.items() if k.startswith("tag:") and v})
    aliases = {k[6:]: v for k, v in value.items() if k.startswith("alias:") and v}
    channels = []
    if email := value.get("email"):
        if not EMAIL.match(email):
            raise RowRejected(f"email {email!r} is not an address")
        channels.append(SubscriptionSpec(type=SubscriptionType.EMAIL, token=email.lower()))
    if phone := value.get("phone_number"):
        if not PHONE.match(phone):
            raise RowRejected(f"phone_number {phone!r} is not E.164 (+15551234567)")
        channels.append(SubscriptionSpec(type=SubscriptionType.SMS, token=phone))
    properties = UserProperties(
        language=value.get("language") or None,
        timezone_id=value.get("timezone_id") or None,
        country=value.get("country") or None,
    )
    return ProfileChange(
        external_id=value.get("external_id") or None, aliases=aliases, tags=tags,
        properties=properties, subscriptions=tuple(channels),
    )  # fmt: skip


def _tags(text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        tags = json.loads(text)
    except json.JSONDecodeError:
        raise RowRejected("tags is not a JSON object") from None
    if not isinstance(tags, dict) or any(isinstance(v, dict | list) for v in tags.values()):
        raise RowRejected("tags must be a JSON object of plain values")
    return {str(k): str(v) for k, v in tags.items()}


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(error)


# Writing -------------------------------------------------------------------------


def _write_rows(
    ledger: Ledger,
    app_id: UUID,
    planned: list[tuple[int, ProfileChange]],
    source: str,
    report: CsvReport,
    tick: Callable[[int], None],
) -> None:
    """Rows are written a wave at a time, the rows of a wave at once (their
    commits then share transactions: group commit). A wave holds consecutive rows
    that name no external_id, alias or token in common, so no row of a wave
    depends on another; the outcomes are counted in file order."""
    width = _wave_width(ledger)
    with acting_as(f"import:csv:{source}"), ThreadPoolExecutor(width) as pool:
        for wave in _waves(planned, width):
            calls = [
                pool.submit(copy_context().run, _write_row, ledger, app_id, change)
                for _, change in wave
            ]
            for (line, _), call in zip(wave, calls, strict=True):
                tick(1)
                try:
                    if call.result() == "created":
                        report.created += 1
                    else:
                        report.updated += 1
                except (LedgerError, ValidationError) as error:
                    report.rejected.append((line, _reason(error)))
                except Exception as error:  # the store failed: say where it stopped
                    report.stopped = report.stopped or (line, f"{type(error).__name__}: {error}")
            if report.stopped:
                return


WAVE = 32  # rows written at once on PostgreSQL


def _wave_width(ledger: Ledger) -> int:
    """PostgreSQL: a wave of rows shares its round trips and commits (measured 1.4-2x
    rows/s at 32). SQLite: one row at a time, since its commands are CPU-bound in
    this process and threads only add switching (measured 0.6-0.9x at 8 and 32)."""
    return 1 if isinstance(ledger.recorder, SQLiteApplicationRecorder) else WAVE


def _waves(
    planned: list[tuple[int, ProfileChange]], width: int
) -> Iterator[list[tuple[int, ProfileChange]]]:
    wave: list[tuple[int, ProfileChange]] = []
    named: set[tuple[str, str]] = set()
    for row in planned:
        claims = set(row[1].claims())
        if len(wave) == width or claims & named:
            yield wave
            wave, named = [], set()
        wave.append(row)
        named |= claims
    if wave:
        yield wave


def _write_row(ledger: Ledger, app_id: UUID, change: ProfileChange) -> str:
    """Create the row's user, or update the one holding its external_id."""
    holder = None
    if change.external_id is not None:
        holder = ledger.read(app_id).holder(EXTERNAL_ID_NAMESPACE, change.external_id)
    if holder is None:
        ledger.create_user(
            app_id, external_id=change.external_id, aliases=change.aliases, tags=change.tags,
            properties=change.properties, subscriptions=change.subscriptions,
            cause=OwnershipCause.IMPORT,
        )  # fmt: skip
        return "created"
    ledger.update_user(app_id, holder, change)
    return "updated"
