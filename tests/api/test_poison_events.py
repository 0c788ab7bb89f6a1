"""Events no read model can apply (written by an old release, a bug, or by hand)
are dead-lettered: the other apps keep being served, the event is reported, and
it can be retried after a fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from eventsourcing.persistence import StoredEvent
from fastapi.testclient import TestClient

from idledger.domain.ledger import Ledger
from idledger.settings import Settings
from tests.api.conftest import Tenant, new_tenant
from tests.conftest import INDEX_KEY, store_url


def _write_raw(store: dict[str, str], *events: StoredEvent) -> None:
    ledger = Ledger(store, index_key=INDEX_KEY)
    try:
        ledger.recorder.insert_events(list(events))
    finally:
        ledger.close()


def _payload(**fields: object) -> bytes:
    return json.dumps({"schema_version": 1, **fields}).encode()


def _undecodable(aggregate: uuid.UUID) -> StoredEvent:
    """A real topic whose payload does not validate (fields missing)."""
    return StoredEvent(aggregate, 1, "idledger.user:Created", _payload(nonsense=True))


def _orphan_tags(aggregate: uuid.UUID) -> StoredEvent:
    """A valid event of a user whose creation is not in the log."""
    state = _payload(
        originator_id=str(aggregate), originator_version=2,
        timestamp="2026-01-01T00:00:00+00:00", actor="system", assigned={"a": "1"}, removed=[],
    )  # fmt: skip
    return StoredEvent(aggregate, 2, "idledger.user:TagsChanged", state)


def _created_and_readable(tenant: Tenant, external_id: str) -> None:
    created = tenant.post("/users", {"identity": {"external_id": external_id}})
    assert created.status_code == 201, created.text
    fetched = tenant.get(f"/users/by/external_id/{external_id}")
    assert fetched.status_code == 200, fetched.text


def test_poison_events_are_dead_lettered_and_other_apps_keep_working(
    client: TestClient, store: dict[str, str]
) -> None:
    before = new_tenant(client, "before")
    _created_and_readable(before, "before-poison")
    broken, orphan = uuid.uuid4(), uuid.uuid4()

    _write_raw(store, _undecodable(broken), _orphan_tags(orphan))
    after = new_tenant(client, "after")

    _created_and_readable(after, "after-poison")
    _created_and_readable(before, "before-again")
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["dead_letters"]["profiles"] == 2
    lag = client.get("/lag").json()
    assert lag["profiles"]["events"] == 0
    assert lag["profiles"]["dead_letters"] == 2
    assert lag["ownership"]["dead_letters"] == 1  # the orphan's tags are no ownership event
    letters = client.app.state.runtime.models.profiles.dead_letters()  # type: ignore[attr-defined]
    assert {letter.originator_id for letter in letters} == {str(broken), str(orphan)}
    assert all(letter.error for letter in letters)


def test_later_events_of_a_dead_lettered_aggregate_are_held(
    client: TestClient, store: dict[str, str]
) -> None:
    tenant = new_tenant(client)
    poisoned = uuid.uuid4()
    _write_raw(store, _undecodable(poisoned))
    _created_and_readable(tenant, "first")

    _write_raw(store, _orphan_tags(poisoned))
    _created_and_readable(tenant, "second")

    letters = client.app.state.runtime.models.profiles.dead_letters()  # type: ignore[attr-defined]
    assert [letter.originator_version for letter in letters] == [1, 2]
    assert letters[1].error.startswith("held")


def test_a_nul_in_a_stored_event_does_not_stop_postgresql(
    client: TestClient, store: dict[str, str]
) -> None:
    """The old release's NUL external_id: storable in the log, not in a PostgreSQL
    read model (on SQLite it simply projects)."""
    tenant = new_tenant(client)
    user_id = uuid.uuid4()
    created = _payload(
        originator_id=str(user_id), originator_version=1, timestamp="2026-01-01T00:00:00+00:00",
        actor="system", app_id=tenant.app_id, cause="api",
    )  # fmt: skip
    nul_id = _payload(
        originator_id=str(user_id), originator_version=2, timestamp="2026-01-01T00:00:01+00:00",
        actor="system", external_id="a\u0000b", replaced=None,
    )  # fmt: skip
    _write_raw(
        store,
        StoredEvent(user_id, 1, "idledger.user:Created", created),
        StoredEvent(user_id, 2, "idledger.user:ExternalIdSet", nul_id),
    )

    _created_and_readable(new_tenant(client, "other"), "unaffected")
    letters = client.app.state.runtime.models.profiles.dead_letters()  # type: ignore[attr-defined]
    if "POSTGRES_SCHEMA" in store:
        assert [(lt.originator_version, lt.topic) for lt in letters] == [
            (2, "idledger.user:ExternalIdSet")
        ]
        assert "NUL" in letters[0].error
        assert "a\u0000b" not in letters[0].error
    else:
        assert letters == []


def _idledger(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("idledger")
    return subprocess.run(
        [str(executable), *args, "--store-url", settings.store_url],
        capture_output=True, text=True, timeout=60, check=False,
        env={
            "COLUMNS": "200", "PATH": "/usr/bin:/bin", "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
            "IDLEDGER_MASTER_KEY": os.environ["IDLEDGER_MASTER_KEY"],
        },
    )  # fmt: skip


def test_a_dead_letter_is_listed_and_applies_on_retry_once_fixed(
    settings: Settings, store: dict[str, str]
) -> None:
    """A damaged read model (a stray row claiming an alias) makes an event fail;
    once the row is removed, `idledger dead-letters --retry` applies it."""
    from idledger.api.main import create_app

    with TestClient(create_app(settings)) as client:
        tenant = new_tenant(client)
        _damage(store, tenant.app_id, "stray")
        response = tenant.post("/users", {"identity": {"external_id": "stray"}})
        assert response.status_code == 503  # durable, but its read model set it aside
        assert response.headers["Retry-After"] == "1"
        assert response.json()["errors"][0]["code"] == "read-model-dead-letter"
        _created_and_readable(tenant, "unrelated")

    listed = _idledger(settings, "dead-letters", "--json")
    assert listed.returncode == 1, listed.stderr
    (letter,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["read_model"] == "profiles"
    assert letter["topic"] == "idledger.user:ExternalIdSet"
    assert "stray" not in listed.stdout

    _repair(store, tenant.app_id)
    retried = _idledger(settings, "dead-letters", "--retry")

    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "no dead letters" in retried.stdout
    with TestClient(create_app(settings)) as client:
        again = Tenant(client, tenant.app_id, tenant.api_key)
        assert again.get("/users/by/external_id/stray").status_code == 200


def _damage(store: dict[str, str], app_id: str, alias_id: str) -> None:
    """A row the profiles projection will collide with (primary key of aliases)."""
    _on_profiles(
        store, "INSERT INTO {t} (app_id, label, alias_id, user_id) VALUES (?, ?, ?, ?)",
        app_id, "external_id", alias_id, str(uuid.uuid4()),
    )  # fmt: skip


def _repair(store: dict[str, str], app_id: str) -> None:
    _on_profiles(store, "DELETE FROM {t} WHERE app_id = ? AND user_id NOT IN "
                 "(SELECT user_id FROM {u})", app_id)  # fmt: skip


def _on_profiles(store: dict[str, str], statement: str, *params: str) -> None:
    if "SQLITE_DBNAME" in store:
        import sqlite3

        path = store["SQLITE_DBNAME"].removesuffix(".db") + ".profiles.db"
        with sqlite3.connect(path) as connection:
            connection.execute(statement.format(t="profile_aliases", u="profile_users"), params)
        return
    schema = store["POSTGRES_SCHEMA"]
    tables = {"t": f'"{schema}".profile_aliases', "u": f'"{schema}".profile_users'}
    with psycopg.connect(store_url(store).split("?")[0], autocommit=True) as connection:
        connection.execute(statement.format(**tables).replace("?", "%s"), params)
