"""Each identity rule, on each store: limits, blocked ids, uniqueness, app scoping."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from idledger.domain.errors import (
    AliasConflict,
    AliasNotFound,
    InvalidValue,
    SubscriptionNotFound,
    UserNotFound,
)
from idledger.domain.ledger import Ledger
from idledger.domain.ownership import TokenTaken
from idledger.domain.values import (
    OwnershipCause,
    Purchase,
    SubscriptionType,
    SubscriptionUpdate,
    UserProperties,
)
from tests.conftest import FakeClock
from tests.helpers import device_user, email, ios, sms


@pytest.fixture
def app_id(ledger: Ledger) -> UUID:
    return ledger.create_app("rules app").app_id


@pytest.mark.parametrize(
    "placeholder", ["-1", "0", "1", "NA", "NULL", "null", "UNQUALIFIED", "", "   ", "n/a"]
)
def test_placeholder_external_ids_are_refused_everywhere(
    ledger: Ledger, app_id: UUID, placeholder: str
) -> None:
    user_id, push = device_user(ledger, app_id, ios("t"))
    position_before = ledger.recorder.max_notification_id()

    with pytest.raises(InvalidValue, match="external_id"):
        ledger.login(app_id, push, placeholder)
    with pytest.raises(InvalidValue, match="external_id"):
        ledger.set_external_id(app_id, user_id, placeholder)
    with pytest.raises(InvalidValue, match="external_id"):
        ledger.create_user(app_id, external_id=placeholder)

    assert ledger.recorder.max_notification_id() == position_before  # nothing written


@pytest.mark.parametrize("label", ["onesignal_id", "external_id", "has space", "", "x" * 65])
def test_reserved_or_malformed_alias_labels_are_refused(
    ledger: Ledger, app_id: UUID, label: str
) -> None:
    user_id, _ = device_user(ledger, app_id, ios("t"))

    with pytest.raises(InvalidValue, match="alias_label"):
        ledger.add_aliases(app_id, user_id, {label: "value"})


def test_api_create_of_a_21st_subscription_evicts_instead_of_failing(
    ledger: Ledger, app_id: UUID
) -> None:
    user_id = ledger.create_user(app_id, subscriptions=[ios(f"t{i}") for i in range(20)]).user_id
    before = set(ledger.read(app_id).user(user_id).subscriptions)

    added = ledger.create_subscription(app_id, user_id, ios("t20"))
    with pytest.raises(InvalidValue, match="subscriptions"):
        ledger.create_user(app_id, subscriptions=[ios(f"u{i}") for i in range(21)])

    after = set(ledger.read(app_id).user(user_id).subscriptions)
    assert added.status == "created"
    assert len(after) == 20
    # All 20 were created at one instant, so the tie goes by id.
    assert before - after == {min(before, key=str)}
    assert after - before == {added.subscription_id}


def test_device_flow_21st_subscription_evicts_the_least_recently_active_push(
    ledger: Ledger, app_id: UUID, clock: FakeClock
) -> None:
    specs = [email(f"e{i}@x.io") for i in range(3)] + [sms(f"+10000{i}") for i in range(3)]
    specs += [ios(f"t{i}") for i in range(14)]
    user_id = ledger.create_user(app_id, subscriptions=specs).user_id
    user = ledger.read(app_id).user(user_id)
    pushes = [s for s, kind in user.subscriptions.items() if kind is SubscriptionType.IOS_PUSH]
    for subscription_id in pushes:  # every push is active, the first one longest ago
        clock.advance(timedelta(minutes=5))
        ledger.record_session(app_id, subscription_id)

    added = ledger.create_subscription(app_id, user_id, ios("t-new"), cause=OwnershipCause.DEVICE)

    user = ledger.read(app_id).user(user_id)
    assert added.status == "created"
    assert len(user.subscriptions) == 20
    assert pushes[0] not in user.subscriptions
    evicted = ledger.ownership_timeline(pushes[0])[-1]
    assert evicted.cause == OwnershipCause.EVICTED
    assert ledger.read(app_id).user(evicted.owner_id).is_anonymous


def test_eviction_keeps_three_emails_and_three_sms(ledger: Ledger, app_id: UUID) -> None:
    specs = [email(f"e{i}@x.io") for i in range(3)] + [sms(f"+1000{i}") for i in range(17)]
    user_id = ledger.create_user(app_id, subscriptions=specs).user_id

    ledger.create_subscription(
        app_id, user_id, email("e-new@x.io"), cause=OwnershipCause.DEVICE,
    )  # fmt: skip

    kinds = list(ledger.read(app_id).user(user_id).subscriptions.values())
    assert kinds.count(SubscriptionType.EMAIL) == 4
    assert kinds.count(SubscriptionType.SMS) == 16


def test_login_into_a_full_user_evicts_instead_of_failing(ledger: Ledger, app_id: UUID) -> None:
    full = ledger.create_user(
        app_id, external_id="EIDA", subscriptions=[ios(f"t{i}") for i in range(20)]
    ).user_id
    _, push = device_user(ledger, app_id, ios("new-phone"))

    assert ledger.login(app_id, push, "EIDA").user_id == full

    subscriptions = ledger.read(app_id).user(full).subscriptions
    assert push in subscriptions
    assert len(subscriptions) == 20


def test_external_ids_and_aliases_are_unique_per_app(ledger: Ledger, app_id: UUID) -> None:
    first = ledger.create_user(app_id, external_id="EIDA", aliases={"crm": "42"}).user_id
    second, _ = device_user(ledger, app_id, ios("t"))

    with pytest.raises(AliasConflict) as conflict:
        ledger.create_user(app_id, external_id="EIDA", aliases={"crm": "42", "free": "1"})
    assert conflict.value.conflicting == {"external_id": "EIDA", "crm": "42"}
    with pytest.raises(AliasConflict):
        ledger.add_aliases(app_id, second, {"crm": "42"})
    with pytest.raises(AliasConflict):
        ledger.set_external_id(app_id, second, "EIDA")

    other_app = ledger.create_app("other").app_id
    twin = ledger.create_user(other_app, external_id="EIDA", aliases={"crm": "42"}).user_id
    assert twin != first
    assert ledger.read(app_id).user(second).aliases == {}


def test_released_aliases_can_be_claimed_again(ledger: Ledger, app_id: UUID) -> None:
    first = ledger.create_user(app_id, external_id="EIDA", aliases={"crm": "42"}).user_id
    second, _ = device_user(ledger, app_id, ios("t"))

    ledger.add_aliases(app_id, first, {"crm": "43"})  # upsert releases "42"
    ledger.remove_external_id(app_id, first)
    ledger.add_aliases(app_id, second, {"crm": "42"})
    ledger.set_external_id(app_id, second, "EIDA")

    assert ledger.read(app_id).user(second).aliases == {"crm": "42"}
    assert ledger.read(app_id).user(second).external_id == "EIDA"
    with pytest.raises(AliasConflict):
        ledger.add_aliases(app_id, second, {"crm": "43"})
    ledger.remove_alias(app_id, first, "crm")
    with pytest.raises(AliasNotFound):
        ledger.remove_alias(app_id, first, "crm")


def test_a_key_for_one_app_cannot_reach_another_apps_users(ledger: Ledger, app_id: UUID) -> None:
    user_id, push = device_user(ledger, app_id, ios("t"))
    other_app = ledger.create_app("other").app_id

    with pytest.raises(UserNotFound):
        ledger.change_tags(other_app, user_id, {"a": "b"})
    with pytest.raises(SubscriptionNotFound):
        ledger.login(other_app, push, "EIDA")
    with pytest.raises(UserNotFound):
        ledger.read(other_app).user(push)  # a subscription id is not a user either


def test_same_type_and_token_is_one_subscription(ledger: Ledger, app_id: UUID) -> None:
    first, push = device_user(ledger, app_id, ios("same-token"))
    second = ledger.create_user(app_id).user_id

    again = ledger.create_subscription(app_id, first, ios("same-token"))
    moved = ledger.create_subscription(app_id, second, ios("same-token"))

    assert (again.status, again.subscription_id) == ("unchanged", push)
    assert (moved.status, moved.subscription_id) == ("moved", push)
    assert ledger.survivor_of(first) == second  # anonymous and left with nothing


def test_update_subscription_keeps_tokens_unique(ledger: Ledger, app_id: UUID) -> None:
    _, a = device_user(ledger, app_id, ios("token-a"))
    _, b = device_user(ledger, app_id, ios("token-b"))

    with pytest.raises(TokenTaken):
        ledger.update_subscription(app_id, b, SubscriptionUpdate(token="token-a"))
    ledger.update_subscription(app_id, a, SubscriptionUpdate(token="token-c", enabled=False))
    ledger.update_subscription(app_id, b, SubscriptionUpdate(token="token-a"))

    subscription = ledger.read(app_id).subscription(a)
    assert (subscription.token, subscription.enabled) == ("token-c", False)
    assert ledger.read(app_id).subscription(b).token == "token-a"


def test_profile_changes_are_recorded(ledger: Ledger, app_id: UUID) -> None:
    user_id, _ = device_user(ledger, app_id, ios("t"))

    ledger.change_properties(
        app_id, user_id, UserProperties(language="fr", timezone_id="Europe/Paris", country="FR")
    )
    ledger.change_tags(app_id, user_id, {"a": "1", "b": "2"})
    ledger.change_tags(app_id, user_id, {"a": "", "c": "3"})
    ledger.record_purchase(app_id, user_id, Purchase(sku="gold", amount=Decimal("1.99"), iso="USD"))

    user = ledger.read(app_id).user(user_id)
    assert user.tags == {"b": "2", "c": "3"}
    assert (user.properties.language, user.properties.country) == ("fr", "FR")
    assert [p.sku for p in user.purchases] == ["gold"]
    with pytest.raises(InvalidValue, match="reserved"):
        ledger.change_tags(app_id, user_id, {"notification": "x"})
