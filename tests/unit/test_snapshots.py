"""Snapshots in their stored form: every attribute round-trips exactly, and a
snapshot that no longer fits its aggregate is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

import pytest

from idledger.domain.base import Aggregate
from idledger.domain.mapper import JsonTranscoder, PydanticMapper
from idledger.domain.snapshot import AggregateSnapshot, SnapshotMismatch
from idledger.domain.subscription import Subscription, SubscriptionSnapshot
from idledger.domain.user import User, UserSnapshot
from idledger.domain.values import (
    DeviceInfo,
    OwnershipCause,
    Purchase,
    SubscriptionSpec,
    SubscriptionType,
    SubscriptionUpdate,
    UserProperties,
)
from tests.aggregate_state import exact, state

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAPPER = PydanticMapper(transcoder=JsonTranscoder())


def rich_user() -> User:
    user = User.create(uuid4(), AT, cause=OwnershipCause.LOGIN)
    user.set_external_id("alice", AT)
    user.add_alias("crm", "cust-1", AT)
    user.change_tags({"plan": "gold", "level": "7"}, AT)
    user.change_properties(
        UserProperties(
            language="pt-BR", timezone_id="America/Sao_Paulo", country="BR", lat=-23.5505,
            long=-46.6333, ip="2001:db8::1", first_active=AT - timedelta(days=3),
            last_active=AT.astimezone(timezone(timedelta(hours=-3))),
        ),
        AT,
    )  # fmt: skip
    user.record_purchase(Purchase(sku="gems", amount=Decimal("1.50"), iso="EUR", count=3), AT)
    user.record_purchase(Purchase(sku="pass", amount=Decimal("0.0001"), iso="USD"), AT)
    user.attach(uuid4(), SubscriptionType.IOS_PUSH, AT)
    user.attach(uuid4(), SubscriptionType.EMAIL, AT + timedelta(seconds=1))
    return user


def retired_user() -> User:
    user = User.create(uuid4(), AT)
    user.merge_into(uuid4(), AT + timedelta(microseconds=1))
    user.delete(AT + timedelta(days=1))
    return user


def rich_subscription() -> Subscription:
    spec = SubscriptionSpec(
        type=SubscriptionType.CHROME_PUSH, token="t", notification_types=-2,
        device=DeviceInfo(device_model="Pixel", rooted=False, net_type=0),
    )  # fmt: skip
    subscription = Subscription.create(uuid4(), spec, uuid4(), OwnershipCause.DEVICE, AT)
    subscription.record_session(120, AT, active_at=AT - timedelta(hours=2))
    subscription.update(SubscriptionUpdate(enabled=False, web_auth="a", device=DeviceInfo()), AT)
    subscription.change_owner(uuid4(), OwnershipCause.TRANSFER, AT + timedelta(minutes=1))
    return subscription


def through_the_store(aggregate: Aggregate) -> Aggregate:
    snapshot = AggregateSnapshot.take(aggregate)
    stored = MAPPER.to_stored_event(snapshot)
    json.loads(stored.state)  # plain JSON
    restored = MAPPER.to_domain_event(stored)
    assert isinstance(restored, AggregateSnapshot)
    return restored.mutate(None)


@pytest.mark.parametrize("build", [rich_user, retired_user, rich_subscription])
def test_a_snapshot_restores_every_attribute_exactly(build: Callable[[], Aggregate]) -> None:
    original = build()
    restored = through_the_store(original)

    assert type(restored) is type(original)
    assert restored.pending_events == []
    assert vars(restored).keys() == vars(original).keys()
    for name, value in vars(original).items():
        if name != "_pending_events":
            assert exact(getattr(restored, name)) == exact(value), name
            assert getattr(restored, name) == value, name
    assert state(restored) == state(original)


def test_each_aggregate_has_its_own_pinned_snapshot_topic() -> None:
    assert MAPPER.to_stored_event(UserSnapshot.of(rich_user())).topic == "idledger.user:Snapshot"
    stored = MAPPER.to_stored_event(SubscriptionSnapshot.of(rich_subscription()))
    assert stored.topic == "idledger.subscription:Snapshot"


def test_an_attribute_without_an_annotation_cannot_be_snapshotted() -> None:
    user = rich_user()
    user.nickname = "al"  # type: ignore[attr-defined]

    with pytest.raises(SnapshotMismatch, match="nickname"):
        AggregateSnapshot.take(user)


def test_a_snapshot_taken_under_other_rules_is_not_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshot = UserSnapshot.of(rich_user())
    assert snapshot.is_current

    monkeypatch.setattr(UserSnapshot, "RULES", UserSnapshot.RULES + 1)

    assert not snapshot.is_current
    with pytest.raises(SnapshotMismatch):
        snapshot.mutate(None)
