"""OneSignal-style CSV import of users.

Columns (a header row; all optional but a row needs an identity or a channel):
``external_id``, ``email``, ``phone_number`` (E.164), ``language``, ``timezone_id``,
``country``, ``tags`` (a JSON object), ``tag:<key>`` and ``alias:<label>``.
Each valid row becomes normal ledger commands (a new user, or an update of the
user who holds the external_id), recorded with cause ``import`` and actor
``import:csv:<file>``; each bad row is reported with its line and reason.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from pydantic import ValidationError

from domain.base import acting_as
from domain.claim import EXTERNAL_ID_NAMESPACE
from domain.errors import LedgerError
from domain.ledger import Ledger, ProfileChange
from domain.values import OwnershipCause, SubscriptionSpec, SubscriptionType, UserProperties

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
KNOWN = {"external_id", "email", "phone_number", "language", "timezone_id", "country", "tags"}


@dataclass
class CsvReport:
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


class RowRejected(ValueError):
    pass


def import_csv(ledger: Ledger, app_id: UUID, rows: Iterable[str], source: str) -> CsvReport:
    report = CsvReport()
    reader = csv.DictReader(rows)
    unknown = [c for c in reader.fieldnames or [] if c not in KNOWN and ":" not in c]
    if unknown:
        raise RowRejected(f"unknown columns {unknown}; see `idledger import-csv --help`")
    with acting_as(f"import:csv:{source}"):
        for row in reader:
            line = reader.line_num
            try:
                _import_row(ledger, app_id, row, report)
            except (RowRejected, LedgerError, ValidationError) as error:
                report.rejected.append((line, _reason(error)))
    return report


def _import_row(ledger: Ledger, app_id: UUID, row: dict[str, str], report: CsvReport) -> None:
    change = _change(row)
    if change.external_id is None and not change.aliases and not change.subscriptions:
        raise RowRejected("a row needs an external_id, an alias, an email or a phone_number")
    holder = None
    if change.external_id is not None:
        holder = ledger.read(app_id).holder(EXTERNAL_ID_NAMESPACE, change.external_id)
    if holder is None:
        ledger.create_user(
            app_id, external_id=change.external_id, aliases=change.aliases, tags=change.tags,
            properties=change.properties, subscriptions=change.subscriptions,
            cause=OwnershipCause.IMPORT,
        )  # fmt: skip
        report.created += 1
    else:
        ledger.update_user(app_id, holder, change)
        report.updated += 1


def _change(row: dict[str, str]) -> ProfileChange:
    value = {k: (v or "").strip() for k, v in row.items() if k is not None}
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
