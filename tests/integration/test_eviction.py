"""OneSignal's subscription limit, on each store: a 21st subscription is never
refused; the least recently active one moves to a new anonymous user (cause
``evicted``), email and SMS keep at least 3 each, and concurrent adds to one user
all succeed without taking it past 20."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from uuid import UUID

import pytest

from idledger.domain.ledger import Ledger, ProfileChange
from idledger.domain.service import SubscriptionOutcome
from idledger.domain.values import (
    MAX_SUBSCRIPTIONS_PER_USER,
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
)
from tests.conftest import INDEX_KEY, FakeClock
from tests.helpers import device_user, email, sms


def android(token: str) -> SubscriptionSpec:
    return SubscriptionSpec(type=SubscriptionType.ANDROID_PUSH, token=token)


@pytest.fixture
def app_id(ledger: Ledger) -> UUID:
    return ledger.create_app("eviction app").app_id


def add_one_by_one(
    ledger: Ledger, app_id: UUID, user_id: UUID, specs: list[SubscriptionSpec]
) -> list[UUID]:
    """Each spec in its own command, so each is a little more recent than the last."""
    return [ledger.create_subscription(app_id, user_id, s).subscription_id for s in specs]


def kinds_of(ledger: Ledger, app_id: UUID, user_id: UUID) -> dict[SubscriptionType, int]:
    kinds = list(ledger.read(app_id).user(user_id).subscriptions.values())
    return {kind: kinds.count(kind) for kind in set(kinds)}


def assert_evicted_alone(ledger: Ledger, app_id: UUID, subscription_id: UUID, was: UUID) -> UUID:
    """The subscription left ``was`` for a new anonymous user of its own, as an
    eviction; returns that user."""
    first, second = ledger.ownership_timeline(subscription_id)
    assert (first.owner_id, first.ended_by) == (was, OwnershipCause.EVICTED)
    assert second.cause == OwnershipCause.EVICTED
    assert second.end is None
    refuge = ledger.read(app_id).user(second.owner_id)
    assert refuge.is_anonymous
    assert set(refuge.subscriptions) == {subscription_id}
    return refuge.id


def test_25_adds_keep_the_20_most_recently_active_and_evict_the_5_others_one_each(
    ledger: Ledger, app_id: UUID, clock: FakeClock
) -> None:
    user_id = ledger.create_user(app_id, external_id="EIDA").user_id
    first_20 = add_one_by_one(ledger, app_id, user_id, [android(f"t{i}") for i in range(20)])
    # Sessions make recency differ from creation order: t0 is now the most recently
    # active and t19 the least; t15..t19 had their last session longest ago.
    for subscription_id in reversed(first_20):
        clock.advance(timedelta(minutes=5))
        ledger.record_session(app_id, subscription_id)

    last_5 = add_one_by_one(ledger, app_id, user_id, [android(f"t{i}") for i in range(20, 25)])

    kept = set(ledger.read(app_id).user(user_id).subscriptions)
    evicted = set(first_20[15:])
    assert kept == set(first_20[:15]) | set(last_5)
    refuges = {assert_evicted_alone(ledger, app_id, s, was=user_id) for s in evicted}
    assert len(refuges) == 5
    assert user_id not in refuges


def test_email_goes_oldest_first_down_to_3_and_then_push_while_sms_keeps_its_3(
    ledger: Ledger, app_id: UUID
) -> None:
    # The 3 SMS are the oldest of all, yet never go: their type is at its minimum.
    texts = [sms(f"+1555000{i}") for i in range(3)]
    user_id = ledger.create_user(app_id, external_id="EIDA", subscriptions=texts).user_id
    emails = add_one_by_one(ledger, app_id, user_id, [email(f"e{i}@x.io") for i in range(17)])

    pushes = add_one_by_one(ledger, app_id, user_id, [android(f"t{i}") for i in range(14)])
    assert kinds_of(ledger, app_id, user_id) == {
        SubscriptionType.SMS: 3, SubscriptionType.EMAIL: 3, SubscriptionType.ANDROID_PUSH: 14,
    }  # fmt: skip
    kept = set(ledger.read(app_id).user(user_id).subscriptions)
    assert kept.isdisjoint(emails[:14])
    assert set(emails[14:]) | set(pushes) <= kept

    # Both channels at their minimum: the oldest push goes, though younger than all.
    newest = ledger.create_subscription(app_id, user_id, android("t14")).subscription_id

    kept = set(ledger.read(app_id).user(user_id).subscriptions)
    assert kinds_of(ledger, app_id, user_id)[SubscriptionType.ANDROID_PUSH] == 14
    assert pushes[0] not in kept
    assert newest in kept
    for subscription_id in [*emails[:14], pushes[0]]:
        assert_evicted_alone(ledger, app_id, subscription_id, was=user_id)


@pytest.mark.parametrize(
    ("spare", "at_minimum"),
    [
        (SubscriptionType.EMAIL, SubscriptionType.SMS),
        (SubscriptionType.SMS, SubscriptionType.EMAIL),
    ],
)
def test_an_idle_email_or_sms_above_3_goes_before_a_more_recently_active_push(
    ledger: Ledger, app_id: UUID, clock: FakeClock, spare: SubscriptionType,
    at_minimum: SubscriptionType,
) -> None:  # fmt: skip
    def spec(kind: SubscriptionType, i: int) -> SubscriptionSpec:
        return email(f"e{i}@x.io") if kind is SubscriptionType.EMAIL else sms(f"+1555000{i}")

    oldest = [spec(at_minimum, i) for i in range(3)]
    user_id = ledger.create_user(app_id, external_id="EIDA", subscriptions=oldest).user_id
    idle = add_one_by_one(ledger, app_id, user_id, [spec(spare, i) for i in range(4)])
    pushes = add_one_by_one(ledger, app_id, user_id, [android(f"t{i}") for i in range(13)])
    for subscription_id in pushes:
        clock.advance(timedelta(minutes=5))
        ledger.record_session(app_id, subscription_id)

    ledger.create_subscription(app_id, user_id, android("t13"))
    assert idle[0] not in ledger.read(app_id).user(user_id).subscriptions
    ledger.create_subscription(app_id, user_id, android("t14"))

    assert pushes[0] not in ledger.read(app_id).user(user_id).subscriptions
    assert kinds_of(ledger, app_id, user_id) == {
        at_minimum: 3, spare: 3, SubscriptionType.ANDROID_PUSH: 14,
    }  # fmt: skip
    assert_evicted_alone(ledger, app_id, idle[0], was=user_id)
    assert_evicted_alone(ledger, app_id, pushes[0], was=user_id)


AddPath = Callable[[Ledger, UUID, UUID, UUID], None]


def _update_user(ledger: Ledger, app_id: UUID, user_id: UUID, _: UUID) -> None:
    ledger.update_user(app_id, user_id, ProfileChange(subscriptions=[android("new")]))


def _create_subscription(ledger: Ledger, app_id: UUID, user_id: UUID, _: UUID) -> None:
    ledger.create_subscription(app_id, user_id, android("new"))


def _login(ledger: Ledger, app_id: UUID, _: UUID, device: UUID) -> None:
    ledger.login(app_id, device, "EIDA")


def _transfer(ledger: Ledger, app_id: UUID, user_id: UUID, device: UUID) -> None:
    ledger.transfer_subscription(app_id, device, user_id)


@pytest.mark.parametrize(
    "add", [_update_user, _create_subscription, _login, _transfer], ids=lambda f: f.__name__[1:]
)
def test_every_way_of_adding_to_a_full_user_evicts_its_least_recently_active(
    ledger: Ledger, app_id: UUID, add: AddPath
) -> None:
    user_id = ledger.create_user(app_id, external_id="EIDA").user_id
    held = add_one_by_one(ledger, app_id, user_id, [android(f"t{i}") for i in range(20)])
    _, device = device_user(ledger, app_id, android("new"))

    add(ledger, app_id, user_id, device)

    subscriptions = ledger.read(app_id).user(user_id).subscriptions
    assert len(subscriptions) == 20
    assert set(subscriptions) == {*held[1:], device}
    assert_evicted_alone(ledger, app_id, held[0], was=user_id)


def test_100_concurrent_adds_to_one_user_all_succeed_and_evict_exactly_the_overflow(
    store: dict[str, str],
) -> None:
    adds, starting = 100, 5
    ledger = Ledger(store, index_key=INDEX_KEY)  # the real clock: safe across threads
    try:
        app_id = ledger.create_app("crowd").app_id
        user_id = ledger.create_user(app_id, external_id="EIDA").user_id
        before = add_one_by_one(
            ledger, app_id, user_id, [android(f"s{i}") for i in range(starting)]
        )
        start = threading.Event()

        def add(i: int) -> SubscriptionOutcome:
            start.wait()
            return ledger.create_subscription(app_id, user_id, android(f"t{i}"))

        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(add, i) for i in range(adds)]
            start.set()
            outcomes = [f.result() for f in futures]  # re-raises any failure

        assert ledger.races_lost > 0, "the adds should have raced (else this proves little)"
        assert {o.status for o in outcomes} == {"created"}
        added = [o.subscription_id for o in outcomes]
        assert len(set(added)) == adds
        kept = set(ledger.read(app_id).user(user_id).subscriptions)
        assert len(kept) == MAX_SUBSCRIPTIONS_PER_USER
        evicted = [s for s in [*before, *added] if s not in kept]
        assert len(evicted) == adds - (MAX_SUBSCRIPTIONS_PER_USER - starting)
        assert set(before) <= set(evicted)  # older than every add
        refuges = {assert_evicted_alone(ledger, app_id, s, was=user_id) for s in evicted}
        assert len(refuges) == len(evicted)
    finally:
        ledger.close()
