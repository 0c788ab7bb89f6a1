"""The profiles read model folds plain JSON rows (projections/profile_rows.py): each
event class's row form must write exactly the JSON the domain's own ``apply`` and
``projections.state`` write, after every event, whatever the values."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import orjson
import pytest

from idledger.domain.base import Aggregate, DomainEvent, EventOrderError
from idledger.domain.mapper import JsonTranscoder, PydanticMapper
from idledger.domain.subscription import Subscription
from idledger.domain.user import TagsChanged, User, UserCreated
from idledger.domain.values import (
    DeviceInfo,
    OwnershipCause,
    Purchase,
    SubscriptionSpec,
    SubscriptionType,
    SubscriptionUpdate,
    UserProperties,
)
from idledger.projections.profile_rows import MUTATORS, Row, dumps, fold, loads, mutator_for
from idledger.projections.records import Recorded
from idledger.projections.state import subscription_to_json, user_to_json
from tests.unit.test_mapper import NicknameSet

APP = uuid4()
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def _user_events() -> list[DomainEvent[Any]]:
    at = T0
    user = User.create(APP, at)
    user.set_external_id("ext-é-1", at)
    user.add_alias("crm", "42", at + timedelta(seconds=1))
    user.add_alias("crm", "43", at + timedelta(microseconds=5))  # replaced
    user.add_alias("zendesk", "z/1", at)
    user.change_tags({"plan": "gold", "note": "tab\there", "emoji": "😀"}, at)
    user.change_tags({"plan": "", "cohort": "7"}, at)
    user.change_properties(
        UserProperties(
            language="pt-BR", timezone_id="Europe/Lisbon", country="PT", lat=38.7223,
            long=-9.1393, ip="203.0.113.9", first_active=datetime(2025, 1, 1, 0, 0, 0, 123456, UTC),
        ),
        datetime(2026, 3, 1, 12, 0, tzinfo=PLUS_TWO),
    )  # fmt: skip
    user.change_properties(UserProperties(lat=1e-7, long=180.0), at)
    user.record_purchase(Purchase(sku="gold", amount=Decimal("1.990"), iso="USD"), at)
    user.record_purchase(Purchase(sku="x", amount=Decimal(3), iso="EUR", count=2), at)
    first, second = uuid4(), uuid4()
    user.attach(first, SubscriptionType.IOS_PUSH, at)
    user.attach(second, SubscriptionType.EMAIL, at)
    user.detach(first, at)
    user.remove_alias("zendesk", at)
    user.remove_external_id(at)
    user.delete(at + timedelta(days=1))
    return user.collect_events()


def _erased_user_events() -> list[DomainEvent[Any]]:
    user = User.create(APP, T0)
    user.set_external_id("gone", T0)
    user.change_tags({"a": "b"}, T0)
    user.erase([uuid4()], T0 + timedelta(hours=1))
    return user.collect_events()


def _merged_user_events() -> list[DomainEvent[Any]]:
    user = User.create(APP, T0, OwnershipCause.DEVICE)
    user.merge_into(uuid4(), T0)
    return user.collect_events()


def _subscription_events() -> list[DomainEvent[Any]]:
    at = datetime(2026, 3, 1, 9, 30, 0, 250000, UTC)
    spec = SubscriptionSpec(
        type=SubscriptionType.ANDROID_PUSH, token="tok-1", notification_types=1,
        device=DeviceInfo(device_model="Pixel", sdk="050000", rooted=False, net_type=0),
    )  # fmt: skip
    push = Subscription.create(APP, spec, uuid4(), OwnershipCause.DEVICE, at)
    push.record_session(30, at, active_at=at)
    push.record_session(10, at, active_at=at - timedelta(days=3))  # late: not the last
    push.record_session(5, at, active_at=datetime(2026, 3, 1, 12, 0, 0, 250001, PLUS_TWO))
    push.record_session(0, at, active_at=datetime(2026, 3, 2, tzinfo=UTC))
    push.change_owner(uuid4(), OwnershipCause.LOGIN, at + timedelta(minutes=1))
    push.update(
        SubscriptionUpdate(token="tok-2", enabled=False, device=DeviceInfo(app_version="2.0")), at
    )
    push.update(SubscriptionUpdate(enabled=True, web_auth="auth"), at)
    push.update(SubscriptionUpdate(device=DeviceInfo(device_model="Pixel 9", test_type=1)), at)
    push.delete(at + timedelta(hours=1))
    return push.collect_events()


HISTORIES: dict[str, tuple[Callable[[], list[DomainEvent[Any]]], Callable[[Any], str]]] = {
    "user": (_user_events, user_to_json),
    "erased user": (_erased_user_events, user_to_json),
    "merged user": (_merged_user_events, user_to_json),
    "subscription": (_subscription_events, subscription_to_json),
}


def _rows(events: list[DomainEvent[Any]]) -> Iterator[str]:
    """The row after each event, through its stored JSON between events (as between pages)."""
    row: Row | None = None
    for event in events:
        record = Recorded.of(event)
        mutator = mutator_for(record.topic)
        assert mutator is not None
        row = loads(dumps(fold(row, record, mutator)))
        yield dumps(row)


def _aggregates(events: list[DomainEvent[Any]], to_json: Callable[[Any], str]) -> Iterator[str]:
    aggregate: Aggregate | None = None
    for event in events:
        aggregate = event.mutate(aggregate)
        yield to_json(aggregate)


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_rows_write_the_json_the_domain_writes_after_every_event(history: str) -> None:
    make, to_json = HISTORIES[history]
    events = make()
    assert list(_rows(events)) == list(_aggregates(events, to_json))


def test_every_event_class_of_users_and_subscriptions_has_a_row_form() -> None:
    def subclasses(cls: type[Any]) -> Iterator[type[Any]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    domain_events = {
        cls.TOPIC
        for cls in subclasses(DomainEvent)
        if "TOPIC" in cls.__dict__
        and cls.__module__.startswith("idledger.domain")
        and cls.aggregate_class() in (User, Subscription)
    }
    tested = {type(e).TOPIC for make, _ in HISTORIES.values() for e in make()}
    assert domain_events == set(MUTATORS)
    assert tested == set(MUTATORS)


def test_the_stored_payload_is_the_payload_rows_are_folded_from() -> None:
    mapper = PydanticMapper(transcoder=JsonTranscoder())
    for make, _ in HISTORIES.values():
        for event in make():
            stored = orjson.loads(mapper.to_stored_event(event).state)
            del stored["schema_version"]
            assert stored == Recorded.of(event).state


def _error(apply: Callable[[], object]) -> str:
    with pytest.raises(EventOrderError) as raised:
        apply()
    return str(raised.value)


def _by_rows(row: Row | None, event: DomainEvent[Any]) -> Row:
    return fold(row, Recorded.of(event), MUTATORS[event.TOPIC])


def test_out_of_order_events_fail_as_the_domain_fails() -> None:
    created, _, tagged = _erased_user_events()[:3]
    assert isinstance(created, UserCreated)
    assert isinstance(tagged, TagsChanged)
    user, row = created.mutate(None), _by_rows(None, created)

    assert _error(lambda: _by_rows(None, tagged)) == _error(lambda: tagged.mutate(None))
    assert _error(lambda: _by_rows(row, created)) == _error(lambda: created.mutate(user))
    # version 3 after version 1: an event in between is missing
    assert _error(lambda: _by_rows(row, tagged)) == _error(lambda: tagged.mutate(user))


def test_an_event_class_without_a_row_form_is_applied_by_the_domain() -> None:
    events = _merged_user_events()[:1]
    user = events[0].mutate(None)
    assert user is not None
    events.append(
        NicknameSet(originator_id=user.id, originator_version=2, timestamp=T0, nickname="Al")
    )
    mutator = mutator_for(NicknameSet.TOPIC)
    assert mutator is not None
    assert mutator.apply is None
    assert list(_rows(events)) == list(_aggregates(events, user_to_json))
