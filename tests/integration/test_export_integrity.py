"""Exports prove themselves: whatever damage an export took on the way (a line
deleted, repeated, moved, cut off or edited; another index key; a target that
already holds events), import refuses it with a message that says so and leaves
the target exactly as it was; and an import killed at any moment leaves all or
nothing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from bench.synth import BatchWriter, identified_user
from idledger.domain.keystore import KEYS_TABLE
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.projections.lock import postgres_conninfo
from idledger.replay.transfer import (
    ImportRefused,
    export_lines,
    import_events,
    index_key_fingerprint,
)
from tests.conftest import INDEX_KEY, fresh_store, store_url
from tests.helpers import device_user, ios

OTHER_KEY = bytes(range(100, 132))
Damage = Callable[[list[str]], list[str]]


@pytest.fixture(scope="module")
def source() -> dict[str, list[str]]:
    """A small SQLite ledger's exports: the whole ledger and one app."""
    with fresh_store("sqlite") as env:
        ledger = Ledger(env, index_key=INDEX_KEY)
        try:
            app_id = ledger.create_app("integrity").app_id
            other = ledger.create_app("other").app_id
            for number in range(4):
                for app in (app_id, other):
                    _, push = device_user(ledger, app, ios(f"phone-{app}-{number}"))
                    ledger.login(app, push, f"person-{number}")
            return {
                "whole": list(export_lines(ledger)),
                "app": list(export_lines(ledger, app_id)),
            }
        finally:
            ledger.close()


def _swap(lines: list[str], at: int) -> list[str]:
    return [*lines[:at], lines[at + 1], lines[at], *lines[at + 2 :]]


def _edit_one_byte(lines: list[str]) -> list[str]:
    """One hex digit of the app's api key hash: still a valid event, other bytes."""
    line = lines[1]
    at = line.index('"api_key_hash":"') + len('"api_key_hash":"')
    digit = "1" if line[at] != "1" else "2"
    return [lines[0], line[:at] + digit + line[at + 1 :], *lines[2:]]


DAMAGES: dict[str, tuple[str, Damage, str]] = {
    "delete a line": ("whole", lambda ls: ls[:4] + ls[5:], r"line 5: .*position 4 is missing"),
    "delete the first event": ("whole", lambda ls: ls[:1] + ls[2:], "first event line is missing"),
    "delete a line of an app export": ("app", lambda ls: ls[:4] + ls[5:], "added or deleted"),
    "duplicate a line": ("whole", lambda ls: ls[:5] + ls[4:], r"line 6: .*repeats line 5"),
    "swap two lines": ("whole", lambda ls: _swap(ls, 4), r"line 5: .*out of place"),
    "swap two lines of an app export": ("app", lambda ls: _swap(ls, 4), "out of order"),
    "drop the trailer": ("whole", lambda ls: ls[:-1], "truncated: no trailer"),
    "cut the last line in half": (
        "whole",
        lambda ls: [*ls[:-1], ls[-1][: len(ls[-1]) // 2]],
        "truncated: .*cut short",
    ),
    "cut after the header": ("whole", lambda ls: ls[:1], "truncated"),
    "edit one byte of a payload": ("whole", _edit_one_byte, "SHA-256 does not match"),
    "no header": ("whole", lambda ls: ls[1:-1], "--legacy"),
}


def target_state(env: dict[str, str]) -> object:
    """The store as bytes (SQLite: the files) or rows (PostgreSQL: events and keys)."""
    if "SQLITE_DBNAME" in env:
        files = [Path(env["SQLITE_DBNAME"]), Path(env["SQLITE_DBNAME"] + "-wal")]
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()]
    schema = env["POSTGRES_SCHEMA"]
    with psycopg.connect(postgres_conninfo(env)) as connection:
        return [
            connection.execute(f'SELECT * FROM "{schema}".{table} ORDER BY 1, 2').fetchall()
            for table in ("idledger_events", KEYS_TABLE)
        ]


def refused_unchanged(env: dict[str, str], lines: list[str], match: str, key: bytes) -> None:
    before = target_state(env)
    log = LedgerLog(env)
    try:
        with pytest.raises(ImportRefused, match=match):
            import_events(log, lines, index_key=key)
    finally:
        log.close()
    assert target_state(env) == before


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_export_is_refused_and_the_target_is_unchanged(
    source: dict[str, list[str]], store: dict[str, str], damage: str
) -> None:
    kind, damaged, match = DAMAGES[damage]
    LedgerLog(store).close()  # the target's tables exist, as they would
    refused_unchanged(store, damaged(source[kind]), match, INDEX_KEY)


def test_an_export_under_another_index_key_is_refused(
    source: dict[str, list[str]], store: dict[str, str]
) -> None:
    LedgerLog(store).close()
    match = "index keys differ.*IDLEDGER_INDEX_KEY.*IDLEDGER_MASTER_KEY.*--keys-from"
    refused_unchanged(store, source["whole"], match, OTHER_KEY)
    header = json.loads(source["whole"][0])
    assert header["index_key_fingerprint"] == index_key_fingerprint(INDEX_KEY)
    assert header["index_key_fingerprint"] != index_key_fingerprint(OTHER_KEY)


def test_an_import_into_a_store_with_events_is_refused(
    source: dict[str, list[str]], store: dict[str, str]
) -> None:
    log = LedgerLog(store)
    try:
        import_events(log, source["app"], index_key=INDEX_KEY)
    finally:
        log.close()
    refused_unchanged(store, source["whole"], "not empty", INDEX_KEY)


def test_the_export_names_its_format_and_its_events_digest(
    source: dict[str, list[str]],
) -> None:
    lines = source["whole"]
    header, trailer = json.loads(lines[0]), json.loads(lines[-1])
    events = lines[1:-1]
    assert header == {
        "idledger_export": 1, "store": "sqlite", "app": None, "first_position": 1,
        "index_key_fingerprint": index_key_fingerprint(INDEX_KEY),
    }  # fmt: skip
    assert trailer == {
        "idledger_export_end": 1, "count": len(events), "last_position": len(events), "gaps": [],
        "sha256": hashlib.sha256("".join(line + "\n" for line in events).encode()).hexdigest(),
    }  # fmt: skip
    assert json.loads(source["app"][0])["app"] is not None


def test_the_cli_refuses_in_one_line(
    source: dict[str, list[str]], sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    damaged = tmp_path / "events.jsonl"
    damaged.write_text("".join(line + "\n" for line in source["whole"]))
    result = idledger_import(damaged, sqlite_env, key=OTHER_KEY).communicate(timeout=60)

    assert "index keys differ" in result[1]
    assert len(result[1].strip().splitlines()) == 1, result[1]


def idledger_import(
    path: Path, env: dict[str, str], key: bytes = INDEX_KEY
) -> subprocess.Popen[str]:
    command = [str(Path(sys.executable).with_name("idledger")), "import", str(path)]
    process_env = {**os.environ, "IDLEDGER_INDEX_KEY": key.hex(), "COLUMNS": "400"}
    return subprocess.Popen(
        [*command, "--store-url", store_url(env)],
        env=process_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


USERS = 1_500  # about 9,000 events: an import takes a second or two


@pytest.fixture(scope="module")
def large_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("large") / "events.jsonl"
    with fresh_store("sqlite") as env:
        ledger = Ledger(env, index_key=INDEX_KEY)
        try:
            writer = BatchWriter(ledger)
            app_id = ledger.create_app("large").app_id
            start = datetime(2026, 1, 1, tzinfo=UTC)
            for number in range(USERS):
                user, push, claims = identified_user(
                    ledger, app_id, number, start + timedelta(seconds=number)
                )
                writer.add(user, push, *claims)
            writer.flush()
            with path.open("w", encoding="utf-8") as out:
                for line in export_lines(ledger):
                    out.write(line + "\n")
            return path, ledger.recorder.max_notification_id() or 0
        finally:
            ledger.close()


def event_count(env: dict[str, str]) -> tuple[int, int | None, int | None]:
    log = LedgerLog(env)
    try:
        notifications = log.recorder.select_notifications(start=1, limit=100_000)
        ids = [n.id for n in notifications]
        return len(ids), (ids[0] if ids else None), (ids[-1] if ids else None)
    finally:
        log.close()


def test_an_import_killed_at_any_moment_leaves_nothing_or_everything(
    store_kind: str, large_export: tuple[Path, int]
) -> None:
    export, events = large_export
    assert events > 2_500
    rng = random.Random(events)
    with fresh_store(store_kind) as env:
        LedgerLog(env).close()
        outcomes = []
        for attempt in range(5):  # the first kill surely early, the others anywhere
            process = idledger_import(export, env)
            time.sleep(0.5 if attempt == 0 else rng.uniform(0.5, 2.0))
            process.send_signal(signal.SIGKILL)
            process.communicate()
            count, _, _ = event_count(env)
            assert count in (0, events), f"a killed import left {count} of {events} events"
            outcomes.append(count)
            if count == events:
                break
        if outcomes[-1] == 0:  # a killed import does not stand in the way of the next
            output = idledger_import(export, env).communicate(timeout=120)
            assert f"imported {events} events" in output[0], output
        assert event_count(env) == (events, 1, events)  # the positions, exactly
        assert outcomes[0] == 0  # and the import after it starts from an empty store


def test_a_sealing_era_export_imports_with_legacy(store: dict[str, str]) -> None:
    fixture = Path(__file__).parent.parent / "fixtures" / "previous_release_events.jsonl"
    lines = fixture.read_text().splitlines()
    log = LedgerLog(store)
    try:
        with pytest.raises(ImportRefused, match="--legacy"):
            import_events(log, lines, index_key=INDEX_KEY)
        with pytest.raises(ImportRefused, match="out of order"):
            import_events(log, _swap(lines, 3), index_key=INDEX_KEY, legacy=True)
        imported = import_events(log, lines, index_key=INDEX_KEY, legacy=True)
    finally:
        log.close()
    assert imported.events == len(lines)
    assert UUID(json.loads(lines[0])["originator_id"])


def test_a_postgresql_log_with_skipped_positions_moves_with_its_positions(
    postgres_env: dict[str, str], store_kind: str
) -> None:
    """A rolled-back write consumes a PostgreSQL position: the export lists the gap
    and the import keeps every position, in either store."""
    ledger = Ledger(postgres_env, index_key=INDEX_KEY)
    try:
        app_id = ledger.create_app("gaps").app_id
        ledger.create_user(app_id, external_id="before-gap")
        schema, table = postgres_env["POSTGRES_SCHEMA"], ledger.recorder.events_table_name  # type: ignore[attr-defined]
        with psycopg.connect(postgres_conninfo(postgres_env), autocommit=True) as connection:
            connection.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), "
                "(SELECT max(notification_id) FROM " + f'"{schema}"."{table}"' + ") + 5, true)",
                (f'"{schema}"."{table}"',),
            )
        ledger.create_user(app_id, external_id="after-gap")
        lines = list(export_lines(ledger))
        positions = [n.id for n in ledger.recorder.select_notifications(start=1, limit=1000)]
    finally:
        ledger.close()
    trailer = json.loads(lines[-1])

    with fresh_store(store_kind) as target:
        log = LedgerLog(target)
        try:
            import_events(log, lines, index_key=INDEX_KEY)
            moved = [n.id for n in log.recorder.select_notifications(start=1, limit=1000)]
        finally:
            log.close()
        deleted = [lines[0], *lines[1:3], *lines[4:]]
        with fresh_store(store_kind) as other:
            LedgerLog(other).close()  # the empty store exists before the refused import
            refused_unchanged(other, deleted, "missing", INDEX_KEY)

    assert len(trailer["gaps"]) == 1
    assert moved == positions
