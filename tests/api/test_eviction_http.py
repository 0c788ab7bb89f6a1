"""OneSignal's subscription limit over HTTP: a 21st subscription gets the answer a
normal add gets, and the one it pushed out shows an ``evicted`` ownership."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Tenant


def push(token: str) -> dict[str, Any]:
    return {"type": "AndroidPush", "token": token}


def full_user(tenant: Tenant, external_id: str) -> str:
    """A user with 20 push subscriptions, t0 the least recently active (each added
    in its own request); returns its onesignal_id."""
    created = tenant.post(
        "/users", {"identity": {"external_id": external_id}, "subscriptions": [push("t0")]}
    )
    assert created.status_code == 201, created.text
    for i in range(1, 20):
        added = tenant.post(
            f"/users/by/external_id/{external_id}/subscriptions", {"subscription": push(f"t{i}")}
        )
        assert added.status_code == 201, added.text
    onesignal_id: str = created.json()["identity"]["onesignal_id"]
    return onesignal_id


def tokens_of(tenant: Tenant, external_id: str) -> dict[str, str]:
    user = tenant.get(f"/users/by/external_id/{external_id}").json()
    return {s["token"]: s["id"] for s in user["subscriptions"]}


def test_create_user_naming_an_existing_user_with_a_21st_subscription_answers_200(
    tenant: Tenant,
) -> None:
    full_user(tenant, "EIDA")
    evicted_id = tokens_of(tenant, "EIDA")["t0"]

    response = tenant.post(
        "/users", {"identity": {"external_id": "EIDA"}, "subscriptions": [push("t20")]}
    )

    assert response.status_code == 200, response.text
    assert {s["token"] for s in response.json()["subscriptions"]} == {f"t{i}" for i in range(1, 21)}
    assert set(tokens_of(tenant, "EIDA")) == {f"t{i}" for i in range(1, 21)}
    owner = tenant.get(f"/subscriptions/{evicted_id}/user/identity").json()["identity"]
    assert set(owner) == {"onesignal_id"}  # a new anonymous user


def test_a_21st_subscription_answers_201_and_the_oldest_shows_an_evicted_ownership(
    tenant: Tenant,
) -> None:
    onesignal_id = full_user(tenant, "EIDA")
    evicted_id = tokens_of(tenant, "EIDA")["t0"]

    response = tenant.post(
        "/users/by/external_id/EIDA/subscriptions", {"subscription": push("t20")}
    )

    assert response.status_code == 201, response.text
    tokens = tokens_of(tenant, "EIDA")
    assert len(tokens) == 20
    assert tokens["t20"] == response.json()["subscription"]["id"]
    assert "t0" not in tokens
    intervals = tenant.get(f"/idledger/subscriptions/{evicted_id}/ownership").json()["intervals"]
    assert [(i["cause"], i["ended_by"]) for i in intervals] == [
        ("api", "evicted"), ("evicted", None),
    ]  # fmt: skip
    assert intervals[0]["owner_id"] == onesignal_id
    refuge = intervals[1]["owner_id"]
    assert refuge != onesignal_id
    owner = tenant.get(f"/subscriptions/{evicted_id}/user/identity").json()["identity"]
    assert owner == {"onesignal_id": refuge}


def test_a_device_associated_to_a_full_user_evicts_instead_of_failing(tenant: Tenant) -> None:
    full_user(tenant, "customer-7")
    evicted_id = tokens_of(tenant, "customer-7")["t0"]
    device = {
        "oneSignalPushToken": "fcm-new", "platform": "android", "user_id": "customer-7",
    }  # fmt: skip

    response = tenant.post("/idledger/devices", device)

    assert response.status_code == 200, response.text
    tokens = tokens_of(tenant, "customer-7")
    assert len(tokens) == 20
    assert tokens["fcm-new"] == response.json()["subscription_id"]
    intervals = tenant.get(f"/idledger/subscriptions/{evicted_id}/ownership").json()["intervals"]
    assert intervals[-1]["cause"] == "evicted"
