"""Forgetting a person without rewriting history: after `DELETE ...?erase=true`
none of their personal values can be found anywhere (raw store files, read
models, exports, API answers, logs), while the history keeps its shape and
other people's values stay readable."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from idledger.domain.service import LedgerLog
from idledger.projections.service import ReadModels
from idledger.replay.rebuild import verify
from idledger.replay.transfer import export_lines, import_events
from tests.api.conftest import Tenant, new_tenant
from tests.conftest import fresh_store, store_url

ALICE = {
    "external_id": "secret-alice-77", "email": "alice77@example.org", "sms": "+33612345678",
    "tag": "Lyon", "push": "apns-alice-device", "alias": "crm-alice-991", "ip": "203.0.113.7",
}  # fmt: skip
BOB = {"external_id": "bob-keeps-42", "email": "bob42@example.org", "tag": "Nantes"}


def _create_alice(tenant: Tenant) -> dict[str, Any]:
    created = tenant.post("/users", {
        "identity": {"external_id": ALICE["external_id"], "crm": ALICE["alias"]},
        "properties": {"tags": {"city": ALICE["tag"]}, "ip": ALICE["ip"], "lat": 45.76},
        "subscriptions": [
            {"type": "Email", "token": ALICE["email"]},
            {"type": "SMS", "token": ALICE["sms"]},
            {"type": "iOSPush", "token": ALICE["push"]},
        ],
    })  # fmt: skip
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    push = next(s["id"] for s in body["subscriptions"] if s["type"] == "iOSPush")
    session = tenant.patch(f"/users/by/external_id/{ALICE['external_id']}",
                           {"deltas": {"session_count": 1}})  # fmt: skip
    assert session.status_code == 202, session.text
    body["push"] = push
    return body


def _create_bob(tenant: Tenant) -> None:
    created = tenant.post("/users", {
        "identity": {"external_id": BOB["external_id"]},
        "properties": {"tags": {"city": BOB["tag"]}},
        "subscriptions": [{"type": "Email", "token": BOB["email"]}],
    })  # fmt: skip
    assert created.status_code == 201, created.text


def _raw_store_text(store: dict[str, str]) -> str:
    """Every byte the store holds, as text: every SQLite file (WAL included), or
    every row of every table of the PostgreSQL schema read with plain SQL."""
    if "SQLITE_DBNAME" in store:
        folder = Path(store["SQLITE_DBNAME"]).parent
        return "".join(p.read_bytes().decode("latin-1") for p in folder.iterdir() if p.is_file())
    schema = store["POSTGRES_SCHEMA"]
    texts = []
    with psycopg.connect(store_url(store).split("?")[0], autocommit=True) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            for row in connection.execute(f'SELECT * FROM "{schema}"."{table}"'):
                for value in row:
                    raw = bytes(value) if isinstance(value, bytes | memoryview) else None
                    texts.append(raw.decode("latin-1") if raw is not None else str(value))
    return "\n".join(texts)


def _values(person: dict[str, str]) -> list[str]:
    return list(person.values())


def server_records(logs: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the service logged (the test's HTTP client logs its own URLs)."""
    return [record for record in logs.records if not record.name.startswith("httpx")]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_after_erasure_no_personal_value_is_found_anywhere(
    client: TestClient, tenant: Tenant, store: dict[str, str], logs: pytest.LogCaptureFixture
) -> None:
    alice = _create_alice(tenant)
    _create_bob(tenant)
    alice_id = alice["identity"]["onesignal_id"]
    exported_before = list(export_lines(client.app.state.runtime.ledger))  # type: ignore[attr-defined]
    timeline_before = tenant.get(f"/idledger/subscriptions/{alice['push']}/ownership").json()
    mau_before = tenant.get("/idledger/mau", params={"from": "2026-01-01", "to": "2030-12-31"})

    erased = tenant.delete(f"/users/by/external_id/{ALICE['external_id']}?erase=true")

    assert erased.status_code == 200, erased.text
    raw = _raw_store_text(store)
    for value in _values(ALICE):
        assert value not in raw, f"{value!r} is still in the raw store"
        assert all(value not in line for line in exported_before), "export holds plain text"
        assert all(value not in r.getMessage() for r in server_records(logs))
    assert tenant.get(f"/users/by/external_id/{ALICE['external_id']}").status_code == 404
    assert tenant.get(f"/users/by/crm/{ALICE['alias']}").status_code == 404
    as_of = tenant.get(f"/idledger/users/{alice_id}/as_of").text
    events = tenant.get(f"/idledger/users/{alice_id}/events").text
    for value in _values(ALICE):
        assert value not in as_of
        assert value not in events
    assert "erased" in events
    timeline = tenant.get(f"/idledger/subscriptions/{alice['push']}/ownership").json()
    kept = [(i["owner_id"], i["start"], i["cause"]) for i in timeline["intervals"]]
    assert kept == [(i["owner_id"], i["start"], i["cause"]) for i in timeline_before["intervals"]]
    assert timeline["intervals"][-1]["ended_by"] == "deleted"  # erasure deletes, as a delete
    mau_after = tenant.get("/idledger/mau", params={"from": "2026-01-01", "to": "2030-12-31"})
    assert mau_after.json() == mau_before.json()
    bob = tenant.get(f"/users/by/external_id/{BOB['external_id']}").json()
    assert bob["properties"]["tags"] == {"city": BOB["tag"]}
    assert bob["subscriptions"][0]["token"] == BOB["email"]


def test_replay_after_erasure_equals_the_live_read_models(
    client: TestClient, tenant: Tenant, store: dict[str, str]
) -> None:
    _create_alice(tenant)
    _create_bob(tenant)
    erased = tenant.delete(f"/users/by/external_id/{ALICE['external_id']}?erase=true")
    assert erased.status_code == 200
    client.app.state.runtime.projector.stop()  # type: ignore[attr-defined]

    differences = verify(store, ["profiles", "ownership", "mau"])

    assert all(difference.identical for difference in differences.values()), differences
    models = ReadModels(store)
    try:
        dumped = json.dumps({n: f.view.dump() for n, f in models.followers.items()}, default=str)
    finally:
        models.close()
    for value in _values(ALICE):
        assert value not in dumped
    assert BOB["tag"] in dumped


def test_an_export_from_before_the_erasure_imported_after_it_reveals_nothing(
    client: TestClient, tenant: Tenant, store_kind: str
) -> None:
    alice = _create_alice(tenant)
    ledger = client.app.state.runtime.ledger  # type: ignore[attr-defined]
    exported_before = list(export_lines(ledger))
    tenant.delete(f"/users/by/external_id/{ALICE['external_id']}?erase=true")

    with fresh_store(store_kind) as target:
        log = LedgerLog(target)
        try:
            import_events(log, exported_before, index_key=ledger.index_key, keys_from=ledger)
            user = ledger.user_as_of(uuid.UUID(alice["identity"]["onesignal_id"]), ledger.clock())
            imported = [log.mapper.to_domain_event(n) for n in
                        log.recorder.select_notifications(start=1, limit=10_000)]  # fmt: skip
        finally:
            log.close()
        raw = _raw_store_text(target)

    dumped = repr(imported) + repr(user)
    for value in _values(ALICE):
        assert value not in dumped
        assert value not in raw


def test_erasing_twice_an_unknown_user_and_another_apps_user(
    client: TestClient, tenant: Tenant
) -> None:
    alice = _create_alice(tenant)
    by_id = f"/users/by/onesignal_id/{alice['identity']['onesignal_id']}?erase=true"
    other = new_tenant(client, "other")

    foreign = other.delete(by_id)
    first = tenant.delete(by_id)
    second = tenant.delete(by_id)
    unknown = tenant.delete(f"/users/by/onesignal_id/{uuid.uuid4()}?erase=true")
    by_gone_external_id = tenant.delete(f"/users/by/external_id/{ALICE['external_id']}?erase=true")

    assert foreign.status_code == 404
    assert (first.status_code, second.status_code) == (200, 200)
    assert unknown.status_code == 404
    assert by_gone_external_id.status_code == 404


def test_a_deleted_and_a_merged_away_user_can_be_erased(tenant: Tenant) -> None:
    kept = tenant.post("/users", {"identity": {"external_id": "kept"}}).json()
    anonymous = tenant.post("/users", {
        "properties": {"tags": {"mood": "anon-secret"}},
        "subscriptions": [{"type": "AndroidPush", "token": "fcm-anon-secret"}],
    }).json()  # fmt: skip
    anonymous_id = anonymous["identity"]["onesignal_id"]
    push = anonymous["subscriptions"][0]["id"]
    moved = tenant.patch(f"/subscriptions/{push}/owner", {"identity": {"external_id": "kept"}})
    assert moved.status_code == 200, moved.text  # the anonymous user is retired
    deleted = tenant.post("/users", {
        "identity": {"external_id": "deleted-first"}, "properties": {"tags": {"x": "del-secret"}},
    }).json()  # fmt: skip
    tenant.delete("/users/by/external_id/deleted-first")

    retired = tenant.delete(f"/users/by/onesignal_id/{anonymous_id}?erase=true")
    gone = tenant.delete(f"/users/by/onesignal_id/{deleted['identity']['onesignal_id']}?erase=true")

    assert (retired.status_code, gone.status_code) == (200, 200)
    assert "anon-secret" not in tenant.get(f"/idledger/users/{anonymous_id}/events").text
    kept_now = tenant.get(f"/users/by/onesignal_id/{kept['identity']['onesignal_id']}").json()
    assert [s["token"] for s in kept_now["subscriptions"]] == ["fcm-anon-secret"]  # not theirs now


def test_re_registering_an_erased_external_id_makes_a_new_unrelated_user(tenant: Tenant) -> None:
    alice = _create_alice(tenant)
    tenant.delete(f"/users/by/external_id/{ALICE['external_id']}?erase=true")

    again = tenant.post("/users", {"identity": {"external_id": ALICE["external_id"]}})

    assert again.status_code == 201, again.text
    body = again.json()
    assert body["identity"]["onesignal_id"] != alice["identity"]["onesignal_id"]
    assert not body["properties"].get("tags")
    assert not body.get("subscriptions")


def test_erasure_racing_a_login_loses_nothing(tenant: Tenant) -> None:
    _create_alice(tenant)
    device = tenant.post("/users", {
        "subscriptions": [{"type": "AndroidPush", "token": "fcm-racing"}]}).json()  # fmt: skip
    device_push = device["subscriptions"][0]["id"]
    answers: dict[str, int] = {}

    def erase() -> None:
        path = f"/users/by/external_id/{ALICE['external_id']}?erase=true"
        answers["erase"] = tenant.delete(path).status_code

    def login() -> None:
        body = {"identity": {"external_id": ALICE["external_id"]}}
        answers["login"] = tenant.patch(f"/subscriptions/{device_push}/owner", body).status_code

    threads = [threading.Thread(target=erase), threading.Thread(target=login)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers["erase"] == 200
    assert answers["login"] in (200, 404)
    timeline = tenant.get(f"/idledger/subscriptions/{device_push}/ownership").json()["intervals"]
    owner = tenant.get(f"/subscriptions/{device_push}/user/identity")
    if timeline[-1]["cause"] == "login":
        # The login came first: the device went to the person and was erased with
        # them (the login's own answer may already find them gone: 404).
        assert owner.status_code == 404
        assert timeline[-1]["end"] is not None
    else:  # the erasure came first: no one holds the external_id, the login is a 404
        assert answers["login"] == 404
        assert owner.status_code == 200, owner.text
        assert owner.json()["identity"].get("external_id") is None
