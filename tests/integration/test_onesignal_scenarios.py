"""OneSignal's own documented examples, replayed against the ledger on each store."""

from __future__ import annotations

from uuid import UUID

import pytest

from idledger.domain.errors import UserNotFound, UserRetired
from idledger.domain.ledger import Ledger
from idledger.domain.values import OwnershipCause
from tests.helpers import device_user, email, ios, web


@pytest.fixture
def app_id(ledger: Ledger) -> UUID:
    return ledger.create_app("scenario app").app_id


def test_website_then_app_without_external_id_gives_two_users(ledger: Ledger, app_id: UUID) -> None:
    osid1, _ = device_user(ledger, app_id, web("web-token"))
    osid2, _ = device_user(ledger, app_id, ios("ios-token"))

    assert osid1 != osid2
    assert ledger.read(app_id).user(osid1).is_anonymous
    assert ledger.read(app_id).user(osid2).is_anonymous


def test_login_with_same_external_id_merges_into_the_first_onesignal_id(
    ledger: Ledger, app_id: UUID
) -> None:
    osid1, web_sub = device_user(ledger, app_id, web("web-token"))
    osid2, ios_sub = device_user(ledger, app_id, ios("ios-token"))
    ledger.change_tags(app_id, osid2, {"anonymous_tag": "x"})

    assert ledger.login(app_id, web_sub, "EIDA").user_id == osid1
    assert ledger.login(app_id, ios_sub, "EIDA").user_id == osid1

    survivor = ledger.read(app_id).user(osid1)
    assert survivor.external_id == "EIDA"
    assert set(survivor.subscriptions) == {web_sub, ios_sub}
    assert "anonymous_tag" not in survivor.tags  # the anonymous user's tags are not carried
    with pytest.raises(UserRetired) as retired:
        ledger.read(app_id).user(osid2)
    assert retired.value.survivor_id == osid1
    assert ledger.survivor_of(osid2) == osid1


def test_reinstall_then_login_restores_the_original_user(ledger: Ledger, app_id: UUID) -> None:
    original, first_install = device_user(ledger, app_id, ios("token-before-reinstall"))
    ledger.login(app_id, first_install, "EIDA")
    ledger.change_tags(app_id, original, {"level": "7"})

    reinstalled, second_install = device_user(ledger, app_id, ios("token-after-reinstall"))
    outcome = ledger.login(app_id, second_install, "EIDA")

    assert outcome.user_id == original
    user = ledger.read(app_id).user(original)
    assert user.tags == {"level": "7"}
    assert set(user.subscriptions) == {first_install, second_install}
    assert ledger.survivor_of(reinstalled) == original


def test_logout_gives_the_push_subscription_a_fresh_anonymous_user(
    ledger: Ledger, app_id: UUID
) -> None:
    identified, push = device_user(ledger, app_id, ios("ios-token"))
    ledger.login(app_id, push, "EIDA")

    fresh = ledger.logout(app_id, push).user_id

    assert fresh != identified
    assert ledger.read(app_id).user(fresh).is_anonymous
    assert set(ledger.read(app_id).user(fresh).subscriptions) == {push}
    kept = ledger.read(app_id).user(identified)
    assert kept.external_id == "EIDA"
    assert kept.subscriptions == {}
    assert ledger.login(app_id, push, "EIDA").user_id == identified


def test_logout_of_an_anonymous_user_changes_nothing(ledger: Ledger, app_id: UUID) -> None:
    anonymous, push = device_user(ledger, app_id, ios("ios-token"))

    outcome = ledger.logout(app_id, push)

    assert outcome.user_id == anonymous
    assert outcome.position is None


def test_login_with_a_new_external_id_while_identified_starts_a_new_user(
    ledger: Ledger, app_id: UUID
) -> None:
    alice, push = device_user(ledger, app_id, ios("shared-phone"))
    ledger.login(app_id, push, "alice")

    bob = ledger.login(app_id, push, "bob").user_id

    assert bob != alice
    assert ledger.read(app_id).user(bob).external_id == "bob"
    assert ledger.read(app_id).user(alice).external_id == "alice"
    assert ledger.owner_of(push, ledger.clock()) == bob


def test_email_added_while_a_user_is_current_belongs_to_that_user(
    ledger: Ledger, app_id: UUID
) -> None:
    user_id, push = device_user(ledger, app_id, ios("ios-token"))
    ledger.login(app_id, push, "EIDA")

    added = ledger.create_subscription(app_id, user_id, email("a@example.com"))
    ledger.logout(app_id, push)

    assert added.status == "created"
    assert ledger.owner_of(added.subscription_id, ledger.clock()) == user_id


def test_ownership_timeline_after_login_logout_and_transfer(ledger: Ledger, app_id: UUID) -> None:
    first_owner, push = device_user(ledger, app_id, ios("ios-token"))
    identified, _ = device_user(ledger, app_id, web("web-token"))
    ledger.set_external_id(app_id, identified, "EIDA")
    other = ledger.create_user(app_id, external_id="someone-else").user_id

    ledger.login(app_id, push, "EIDA")
    anonymous = ledger.logout(app_id, push).user_id
    ledger.transfer_subscription(app_id, push, other)

    timeline = ledger.ownership_timeline(push)
    assert [(i.owner_id, i.cause) for i in timeline] == [
        (first_owner, OwnershipCause.API),
        (identified, OwnershipCause.LOGIN),
        (anonymous, OwnershipCause.LOGOUT),
        (other, OwnershipCause.TRANSFER),
    ]
    assert [i.ended_by for i in timeline] == ["login", "logout", "transfer", None]
    for interval in timeline:
        assert ledger.owner_of(push, interval.start) == interval.owner_id
    assert ledger.owner_of(push, timeline[0].start.replace(year=2000)) is None
    assert ledger.survivor_of(first_owner) == identified  # left with nothing at login
    assert ledger.survivor_of(anonymous) == other  # left with nothing at the transfer


def test_user_as_of_shows_the_past_state(ledger: Ledger, app_id: UUID) -> None:
    user_id, push = device_user(ledger, app_id, ios("ios-token"))
    before_login = ledger.clock()
    ledger.login(app_id, push, "EIDA")
    ledger.change_tags(app_id, user_id, {"plan": "gold"})
    after_tags = ledger.clock()
    ledger.change_tags(app_id, user_id, {"plan": ""})

    past = ledger.user_as_of(user_id, before_login)
    later = ledger.user_as_of(user_id, after_tags)
    now = ledger.user_as_of(user_id, ledger.clock())

    assert past is not None
    assert past.external_id is None
    assert past.tags == {}
    assert later is not None
    assert later.external_id == "EIDA"
    assert later.tags == {"plan": "gold"}
    assert now is not None
    assert now.tags == {}
    assert ledger.user_as_of(user_id, before_login.replace(year=2000)) is None


def test_deleted_user_frees_its_external_id_and_deletes_its_subscriptions(
    ledger: Ledger, app_id: UUID
) -> None:
    user_id, push = device_user(ledger, app_id, ios("ios-token"))
    ledger.login(app_id, push, "EIDA")

    ledger.delete_user(app_id, user_id)

    with pytest.raises(UserNotFound):
        ledger.read(app_id).user(user_id)
    assert ledger.owner_of(push, ledger.clock()) is None
    assert ledger.ownership_timeline(push)[-1].ended_by == "deleted"
    reborn = ledger.create_user(app_id, external_id="EIDA", subscriptions=[ios("ios-token")])
    assert reborn.user_id != user_id
