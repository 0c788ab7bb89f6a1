"""What the store holds: pinned topics, schema versions, no readable claim values,
and a log that rebuilds the same state in a new process."""

from __future__ import annotations

import json
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from idledger.domain.errors import UserNotFound
from idledger.domain.ledger import Ledger
from idledger.domain.mapper import SCHEMA_VERSION_KEY, MapperValidationError
from tests.conftest import INDEX_KEY
from tests.helpers import device_user, ios


def stored_events(ledger: Ledger) -> list[StoredEvent]:
    return list(ledger.recorder.select_notifications(start=1, limit=10_000))


def test_every_stored_event_has_a_pinned_topic_and_a_schema_version(ledger: Ledger) -> None:
    app_id = ledger.create_app("format").app_id
    _, push = device_user(ledger, app_id, ios("secret-token"))
    ledger.login(app_id, push, "alice@example.com")

    events = stored_events(ledger)

    assert {e.topic.split(":")[0] for e in events} <= {
        "idledger.app", "idledger.user", "idledger.subscription", "idledger.claim",
    }  # fmt: skip
    for event in events:
        assert json.loads(event.state)[SCHEMA_VERSION_KEY] == 1


def test_claims_do_not_reveal_the_values_they_protect(ledger: Ledger) -> None:
    app_id = ledger.create_app("privacy").app_id
    ledger.create_user(app_id, external_id="alice@example.com", aliases={"crm": "cust-991"})

    claims = [e for e in stored_events(ledger) if e.topic.startswith("idledger.claim")]

    assert len(claims) == 2
    for claim in claims:
        assert b"alice" not in claim.state
        assert b"cust-991" not in claim.state
        assert "alice" not in str(claim.originator_id)


def test_a_new_process_rebuilds_the_same_state_from_the_log(
    store: dict[str, str], ledger: Ledger
) -> None:
    app_id = ledger.create_app("rebuild").app_id
    user_id, push = device_user(ledger, app_id, ios("t"))
    ledger.login(app_id, push, "EIDA")
    ledger.change_tags(app_id, user_id, {"a": "1"})

    reopened = Ledger(store, index_key=INDEX_KEY)
    try:
        original = ledger.read(app_id).user(user_id)
        rebuilt = reopened.read(app_id).user(user_id)
        assert vars(rebuilt) == vars(original)
        assert reopened.login(app_id, push, "EIDA").user_id == user_id  # claims found again
    finally:
        reopened.close()


def test_another_index_key_cannot_find_the_claims(store: dict[str, str], ledger: Ledger) -> None:
    app_id = ledger.create_app("keys").app_id
    ledger.create_user(app_id, external_id="EIDA")

    other = Ledger(store, index_key=b"another key of 32 bytes........")
    try:
        assert other.read(app_id).holder("external_id", "EIDA") is None
    finally:
        other.close()


def test_postgres_tables_carry_the_application_name(postgres_env: dict[str, str]) -> None:
    ledger = Ledger(postgres_env, index_key=INDEX_KEY)
    try:
        assert ledger.recorder.events_table_name == "idledger_events"  # type: ignore[attr-defined]
    finally:
        ledger.close()


def test_a_stored_payload_that_breaks_the_schema_is_reported_on_read(ledger: Ledger) -> None:
    app_id = ledger.create_app("schema").app_id
    user_id = ledger.create_user(app_id).user_id
    bad = StoredEvent(
        originator_id=user_id,
        originator_version=2,
        topic="idledger.user:TagsChanged",
        state=json.dumps(
            {"timestamp": "2026-01-01T00:00:00+00:00", "assigned": {"a": 1}, SCHEMA_VERSION_KEY: 1}
        ).encode(),
    )
    ledger.recorder.insert_events([bad])

    with pytest.raises(MapperValidationError, match="TagsChanged"):
        ledger.read(app_id).user(user_id)
    with pytest.raises(UserNotFound):
        ledger.read(app_id).user(UUID(int=7))
