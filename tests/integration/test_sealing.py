"""A store written by the previous release (personal values in plain text) is
sealed in place by `idledger seal`, resumably; `import` seals such lines on the
way in; `idledger erase` forgets a person from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.replay.transfer import ImportRefused, import_events
from tests.api.test_erasure import _raw_store_text
from tests.conftest import INDEX_KEY, store_url

FIXTURE = Path(__file__).parent.parent / "fixtures" / "previous_release_events.jsonl"
PLAIN_VALUES = [
    "secret-alice-77", "bob-legacy-2", "cust-991", "Lyon", "Rex", "203.0.113.7",
    "alice77@example.org", "+33612345678", "apns-legacy-token-1", "fcm-legacy-token-2",
]  # fmt: skip


def _records() -> list[dict[str, object]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def _write_as_the_previous_release(store: dict[str, str]) -> None:
    """The fixture's stored payloads, byte for byte as that release wrote them."""
    log = LedgerLog(store)
    try:
        log.recorder.insert_events([
            StoredEvent(UUID(str(r["originator_id"])), int(str(r["originator_version"])),
                        str(r["topic"]), json.dumps(r["state"]).encode())
            for r in _records()
        ])  # fmt: skip
    finally:
        log.close()


def _alice(records: list[dict[str, object]]) -> tuple[UUID, UUID]:
    """(app id, alice's onesignal_id) from the fixture."""
    app = next(r for r in records if r["topic"] == "idledger.app:Created")
    alice = next(
        r for r in records
        if r["topic"] == "idledger.user:ExternalIdSet"
        and r["state"]["external_id"] == "secret-alice-77"  # type: ignore[index]
    )  # fmt: skip
    return UUID(str(app["originator_id"])), UUID(str(alice["originator_id"]))


def idledger(store: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("idledger")
    return subprocess.run(
        [str(executable), *args, "--store-url", store_url(store)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
             "IDLEDGER_MASTER_KEY": os.environ["IDLEDGER_MASTER_KEY"]},
    )  # fmt: skip


def test_idledger_seal_seals_a_previous_release_store_in_place(store: dict[str, str]) -> None:
    _write_as_the_previous_release(store)
    app_id, alice_id = _alice(_records())
    assert all(value in _raw_store_text(store) for value in PLAIN_VALUES)
    ledger = Ledger(store, index_key=INDEX_KEY)
    before = ledger.user_as_of(alice_id, ledger.clock())
    ledger.close()

    first = idledger(store, "seal")
    again = idledger(store, "seal")

    assert first.returncode == 0, first.stderr
    assert "sealed 0" not in first.stdout
    assert "sealed 0;" in again.stdout  # resumable: what is sealed is skipped
    raw = _raw_store_text(store)
    for value in PLAIN_VALUES:
        assert value not in raw, f"{value!r} still in plain text"
    ledger = Ledger(store, index_key=INDEX_KEY)
    try:
        after = ledger.user_as_of(alice_id, ledger.clock())
        assert after is not None
        assert before is not None
        assert (after.external_id, after.aliases, after.tags, after.properties) == (
            before.external_id,
            before.aliases,
            before.tags,
            before.properties,
        )
        assert after.external_id == "secret-alice-77"
        assert ledger.read(app_id).holder("external_id", "secret-alice-77") == alice_id
    finally:
        ledger.close()


def test_importing_a_previous_release_export_seals_it_on_the_way_in(
    store: dict[str, str],
) -> None:
    log = LedgerLog(store)
    try:
        imported = import_events(
            log, FIXTURE.read_text().splitlines(), index_key=INDEX_KEY, legacy=True
        )
    finally:
        log.close()

    assert imported.events == len(_records())
    raw = _raw_store_text(store)
    assert not [value for value in PLAIN_VALUES if value in raw]
    _, alice_id = _alice(_records())
    ledger = Ledger(store, index_key=INDEX_KEY)
    try:
        alice = ledger.user_as_of(alice_id, ledger.clock())
        assert alice is not None
        assert alice.tags == {"city": "Lyon"}
    finally:
        ledger.close()


def test_idledger_erase_forgets_a_person_and_says_so_once(store: dict[str, str]) -> None:
    log = LedgerLog(store)
    try:
        import_events(log, FIXTURE.read_text().splitlines(), index_key=INDEX_KEY, legacy=True)
    finally:
        log.close()
    app_id, alice_id = _alice(_records())

    erased = idledger(store, "erase", "--app", str(app_id), "--user", str(alice_id))
    twice = idledger(store, "erase", "--app", str(app_id), "--user", str(alice_id))
    unknown = idledger(store, "erase", "--app", str(app_id), "--user", str(UUID(int=7)))

    assert erased.returncode == 0, erased.stderr
    assert "erased user" in erased.stdout
    assert twice.returncode == 0
    assert "already erased" in twice.stdout
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "Traceback" not in unknown.stderr
    ledger = Ledger(store, index_key=INDEX_KEY)
    try:
        alice = ledger.user_as_of(alice_id, ledger.clock())
        assert alice is not None
        assert alice.deleted
        assert alice.external_id is None
        events = [repr(e) for e in ledger.events.get(alice_id)]
    finally:
        ledger.close()
    assert not [value for value in PLAIN_VALUES[:1] + PLAIN_VALUES[2:4] if value in "".join(events)]


def test_import_refuses_a_line_whose_values_no_store_can_hold(store: dict[str, str]) -> None:
    records = _records()
    poisoned = next(r for r in records if r["topic"] == "idledger.user:ExternalIdSet")
    poisoned["state"]["external_id"] = "a\u0000b"  # type: ignore[index]
    lines = [json.dumps(r) for r in records]
    log = LedgerLog(store)
    try:
        with pytest.raises(ImportRefused, match="NUL"):
            import_events(log, lines, index_key=INDEX_KEY, legacy=True)
        assert (log.recorder.max_notification_id() or 0) == 0  # nothing written
    finally:
        log.close()
