"""Replay trusts the payloads this release wrote (projections/records.py): it reads
rows itself, parses each payload once and checks only its shape, and folds profiles
as plain rows. On each store, the read models it builds must equal those built by
the domain's own decoding (upcasting, validation) of every event, dead letters
included, and every event that does not decode must still be set aside."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from eventsourcing.persistence import StoredEvent

from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.domain.user import TagsChanged
from idledger.domain.values import (
    DeviceInfo,
    OwnershipCause,
    Purchase,
    SubscriptionUpdate,
    UserProperties,
)
from idledger.projections.engine import Follower, catch_up_together
from idledger.replay.rebuild import discard
from tests.conftest import FakeClock
from tests.helpers import device_user, email, ios
from tests.unit.test_mapper import NicknameSet

NAMES = ["profiles", "ownership", "mau"]


def _raw(ledger: Ledger, topic: str, aggregate: uuid.UUID, version: int, state: Any) -> None:
    payload = state if isinstance(state, bytes) else json.dumps(state).encode()
    ledger.recorder.insert_events([StoredEvent(aggregate, version, topic, payload)])


def _busy_log(ledger: Ledger, clock: FakeClock) -> dict[str, uuid.UUID]:
    """Every kind of event the read models read, and a few they must set aside."""
    app_id = ledger.create_app("fast path").app_id
    alice, phone = device_user(ledger, app_id, ios("phone-a"))
    ledger.login(app_id, phone, "alice")
    ledger.add_aliases(app_id, alice, {"crm": "42"})
    ledger.change_tags(app_id, alice, {"plan": "gold", "city": "Zürich"})
    ledger.change_properties(app_id, alice, UserProperties(lat=47.37, long=8.54, country="CH"))
    ledger.record_purchase(app_id, alice, Purchase(sku="gold", amount=Decimal("9.90"), iso="CHF"))
    clock.advance(timedelta(days=3))
    ledger.record_session(app_id, phone, 60)
    ledger.update_subscription(
        app_id, phone, SubscriptionUpdate(enabled=False, device=DeviceInfo(app_version="2"))
    )
    _, tablet = device_user(ledger, app_id, ios("tablet-b"))
    ledger.login(app_id, tablet, "alice")  # its anonymous user is merged into alice
    mail = ledger.create_subscription(app_id, alice, email("a@example.com")).subscription_id
    erin = ledger.create_user(app_id, external_id="erin").user_id
    ledger.transfer_subscription(app_id, mail, erin, cause=OwnershipCause.TRANSFER)
    carol = ledger.create_user(app_id, external_id="carol", subscriptions=[ios("c")]).user_id
    ledger.record_session(app_id, ledger.read(app_id).user(carol).subscriptions.copy().popitem()[0])
    ledger.erase_user(app_id, carol)
    dave = ledger.create_user(app_id, external_id="dave", tags={"x": "y"}).user_id
    ledger.delete_user(app_id, dave)
    ledger.logout(app_id, phone)
    at = clock().isoformat()
    upgraded = ledger.read(app_id).user(alice).version + 1
    _raw(ledger, NicknameSet.TOPIC, alice, upgraded,  # an older schema version: upcast
         {"timestamp": at, "actor": "system", "name": "Al", "schema_version": 1})  # fmt: skip
    broken, extra, orphan, stranger = (uuid.uuid4() for _ in range(4))
    _raw(ledger, "idledger.user:Created", broken, 1, {"schema_version": 1, "nonsense": True})
    created = {"timestamp": at, "actor": "system", "app_id": str(app_id), "cause": "api"}
    _raw(ledger, "idledger.user:Created", extra, 1, {**created, "schema_version": 1, "x": 1})
    tags = {"timestamp": at, "actor": "system", "assigned": {}, "removed": [], "schema_version": 1}
    _raw(ledger, TagsChanged.TOPIC, orphan, 2, tags)  # its user's creation is not in the log
    _raw(ledger, "idledger.nowhere:Unknown", stranger, 1, {"schema_version": 1})
    _raw(ledger, "idledger.user:Created", uuid.uuid4(), 1, b"not json")
    return {"alice": alice, "broken": broken, "extra": extra, "orphan": orphan,
            "stranger": stranger}  # fmt: skip


def _build(store: dict[str, str], variant: str, *, trusted: bool) -> dict[str, Any]:
    log = LedgerLog(store)
    followers = [Follower(log, store, name, variant=variant) for name in NAMES]
    try:
        catch_up_together(followers, trusted=trusted)
        return {f.name: f.view.dump() for f in followers}
    finally:
        for follower in followers:
            follower.close()
            discard(store, follower.name, variant)
        log.close()


def test_trusted_replay_builds_what_the_domains_decoding_builds(
    store: dict[str, str], ledger: Ledger, clock: FakeClock
) -> None:
    ids = _busy_log(ledger, clock)

    fast = _build(store, "_fast", trusted=True)
    checked = _build(store, "_checked", trusted=False)

    assert fast == checked
    profiles = {row[0]: row for row in fast["profiles"]["profile_users"]}
    alice = orjson.loads(profiles[str(ids["alice"])][-1])
    assert alice["tags"] == {"plan": "gold", "city": "Zürich", "nickname": "Al"}  # unsealed
    letters = {name: {row[1] for row in fast[name][f"{prefix}_dead_letters"]}
               for name, prefix in [("profiles", "profile"), ("ownership", "ownership"),
                                    ("mau", "mau")]}  # fmt: skip
    undecodable = {str(ids[name]) for name in ("broken", "extra", "stranger")}
    assert undecodable <= letters["ownership"] == letters["mau"]
    assert letters["profiles"] == letters["mau"] | {str(ids["orphan"])}
    assert len(letters["mau"]) == 4  # and the payload that is not JSON


def test_a_sealed_payload_that_does_not_open_is_set_aside_where_it_is_read(
    store: dict[str, str], ledger: Ledger
) -> None:
    app_id = ledger.create_app("tampered").app_id
    user_id = ledger.create_user(app_id, external_id="eve", tags={"a": "1"}).user_id
    log = LedgerLog(store)
    try:
        (tagged,) = [
            n for n in log.recorder.select_notifications(start=1, limit=100)
            if n.topic == TagsChanged.TOPIC
        ]  # fmt: skip
    finally:
        log.close()
    version = ledger.read(app_id).user(user_id).version + 1
    state = orjson.loads(tagged.state)  # sealed for another version: it cannot open here
    state["timestamp"] = datetime(2026, 6, 1, tzinfo=UTC).isoformat()
    _raw(ledger, TagsChanged.TOPIC, user_id, version, orjson.dumps(state))

    built = _build(store, "_tampered", trusted=True)

    (letter,) = built["profiles"]["profile_dead_letters"]
    assert letter[1:3] == (str(user_id), version)
    assert "InvalidTag" in letter[-1]
    assert built["ownership"]["ownership_dead_letters"] == []  # no personal value read there
    assert built["mau"]["mau_dead_letters"] == []


def test_many_rows_are_written_and_found_as_given(store: dict[str, str]) -> None:
    """PostgreSQL gets each column as one array (one statement for all the rows),
    SQLite one statement per row: the same rows either way, upserts included."""
    log = LedgerLog(store)
    follower = Follower(log, store, "mau", variant="_many")
    days = [(f"s{n % 7}", n) for n in range(20_000)]  # more than an IN list holds
    counts = [("app", day, "iOSPush", 1) for day in range(3)]
    upsert = (
        "INSERT INTO {mau_counts} (app_id, day, type, active) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (app_id, day, type) DO UPDATE "
        "SET active = {mau_counts}.active + excluded.active"
    )
    try:
        for _ in range(2):
            with follower.view.writing(None) as writer:
                writer.many(upsert, counts)
        with follower.view.writing(None) as writer:
            writer.many("INSERT INTO {mau_active_days} (subscription_id, day) VALUES (?, ?)", days)
            found = writer.all_in(
                "SELECT subscription_id, day FROM {mau_active_days} WHERE subscription_id IN",
                [f"s{n}" for n in range(3)] + [f"none-{n}" for n in range(1000)],
            )
            assert writer.all_in("SELECT day FROM {mau_active_days} WHERE day IN", []) == []
        dumped = follower.view.dump()
    finally:
        follower.close()
        discard(store, "mau", "_many")
        log.close()
    assert dumped["mau_active_days"] == sorted(days)
    assert sorted((row["subscription_id"], row["day"]) for row in found) == sorted(
        (sid, day) for sid, day in days if sid in ("s0", "s1", "s2")
    )
    assert dumped["mau_counts"] == [("app", day, "iOSPush", 2) for day in range(3)]
