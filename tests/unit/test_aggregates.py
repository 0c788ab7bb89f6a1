"""Aggregates and their events, folded in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from idledger.domain.ownership import choose_eviction_victim
from idledger.domain.subscription import Subscription
from idledger.domain.user import TagsChanged, User
from idledger.domain.values import OwnershipCause, SubscriptionSpec, SubscriptionType

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def subscription(
    kind: SubscriptionType, created: datetime, active: datetime | None
) -> Subscription:
    created_one = Subscription.create(
        uuid4(),
        SubscriptionSpec(type=kind, token=str(uuid4())),
        uuid4(),
        OwnershipCause.API,
        created,
    )
    if active is not None:
        created_one.record_session(0, active)
    return created_one


def test_changing_nothing_records_nothing() -> None:
    user = User.create(uuid4(), T0)
    user.change_tags({"a": "1"}, T0)
    user.collect_events()

    user.change_tags({"a": "1", "gone": ""}, T0)

    assert user.collect_events() == []


def test_tag_changes_are_one_event_with_sets_and_removals() -> None:
    user = User.create(uuid4(), T0)
    user.change_tags({"a": "1", "b": "2"}, T0)
    user.collect_events()

    user.change_tags({"a": "", "c": "3"}, T0)

    (event,) = user.collect_events()
    assert isinstance(event, TagsChanged)
    assert (event.assigned, event.removed) == ({"c": "3"}, ["a"])
    assert user.tags == {"b": "2", "c": "3"}


def test_event_times_never_go_backwards_within_an_aggregate() -> None:
    user = User.create(uuid4(), T0)

    user.change_tags({"a": "1"}, T0 - timedelta(hours=1))

    assert [e.timestamp for e in user.collect_events()] == [T0, T0]


def test_eviction_keeps_the_only_email_and_takes_the_least_recently_active_push() -> None:
    old_push = subscription(SubscriptionType.IOS_PUSH, T0, T0 + timedelta(days=1))
    fresh_push = subscription(SubscriptionType.ANDROID_PUSH, T0, T0 + timedelta(days=9))
    idle_email = subscription(SubscriptionType.EMAIL, T0 - timedelta(days=99), None)

    assert choose_eviction_victim([fresh_push, idle_email, old_push]) is old_push


def test_eviction_without_push_keeps_three_of_each_channel() -> None:
    emails = [subscription(SubscriptionType.EMAIL, T0 - timedelta(days=i), None) for i in range(3)]
    texts = [subscription(SubscriptionType.SMS, T0 + timedelta(days=i), None) for i in range(4)]

    assert choose_eviction_victim(emails + texts) is texts[0]
