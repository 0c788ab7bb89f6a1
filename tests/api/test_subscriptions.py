"""OneSignal subscription endpoints over HTTP, and the SDKs' login and logout."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Tenant


def new_user(tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = tenant.post("/users", body)
    assert response.status_code in (200, 201), response.text
    user: dict[str, Any] = response.json()
    return user


def push(token: str) -> dict[str, Any]:
    return {"type": "AndroidPush", "token": token}


def test_create_subscription_answers_created_unchanged_or_moved(tenant: Tenant) -> None:
    new_user(tenant, {"identity": {"external_id": "EIDA"}})
    new_user(tenant, {"identity": {"external_id": "EIDB"}})

    created = tenant.post("/users/by/external_id/EIDA/subscriptions", {"subscription": push("t")})
    again = tenant.post("/users/by/external_id/EIDA/subscriptions", {"subscription": push("t")})
    moved = tenant.post("/users/by/external_id/EIDB/subscriptions", {"subscription": push("t")})

    assert [created.status_code, again.status_code, moved.status_code] == [201, 200, 202]
    subscription_id = created.json()["subscription"]["id"]
    assert moved.json()["subscription"]["id"] == subscription_id
    owner = tenant.get(f"/subscriptions/{subscription_id}/user/identity").json()
    assert owner["identity"]["external_id"] == "EIDB"


def test_a_21st_subscription_is_created_and_more_than_20_in_one_body_is_a_400(
    tenant: Tenant,
) -> None:
    new_user(
        tenant,
        {"identity": {"external_id": "EIDA"}, "subscriptions": [push(f"t{i}") for i in range(20)]},
    )

    response = tenant.post(
        "/users/by/external_id/EIDA/subscriptions", {"subscription": push("t20")}
    )

    assert response.status_code == 201
    tokens = [s["token"] for s in tenant.get("/users/by/external_id/EIDA").json()["subscriptions"]]
    assert len(tokens) == 20
    assert "t20" in tokens
    too_many = tenant.post("/users", {"subscriptions": [push(f"u{i}") for i in range(21)]})
    assert too_many.status_code == 400


def test_update_and_delete_a_subscription(tenant: Tenant) -> None:
    user = new_user(tenant, {"identity": {"external_id": "EIDA"}, "subscriptions": [push("t")]})
    subscription_id = user["subscriptions"][0]["id"]

    updated = tenant.patch(
        f"/subscriptions/{subscription_id}",
        {"subscription": {"enabled": False, "app_version": "2.0"}},
    )
    view = tenant.get("/users/by/external_id/EIDA").json()["subscriptions"][0]
    deleted = tenant.delete(f"/subscriptions/{subscription_id}")

    assert updated.status_code == 200
    assert (view["enabled"], view["app_version"]) == (False, "2.0")
    assert deleted.status_code == 202
    assert tenant.get(f"/subscriptions/{subscription_id}/user/identity").status_code == 404
    assert tenant.delete(f"/subscriptions/{subscription_id}").status_code == 404
    assert tenant.patch("/subscriptions/not-a-uuid", {"subscription": {}}).status_code == 404


def test_transfer_moves_a_subscription_and_echoes_the_target(tenant: Tenant) -> None:
    user = new_user(tenant, {"identity": {"external_id": "EIDA"}, "subscriptions": [push("t")]})
    target = new_user(tenant, {"identity": {"external_id": "EIDB"}})
    subscription_id = user["subscriptions"][0]["id"]

    response = tenant.patch(
        f"/subscriptions/{subscription_id}/owner", {"identity": {"external_id": "EIDB"}}
    )
    two_keys = tenant.patch(
        f"/subscriptions/{subscription_id}/owner", {"identity": {"external_id": "EIDA", "crm": "1"}}
    )

    assert response.status_code == 200
    assert response.json() == {"identity": target["identity"]}
    assert two_keys.status_code == 400
    timeline = tenant.get(f"/idledger/subscriptions/{subscription_id}/ownership").json()[
        "intervals"
    ]
    assert [i["cause"] for i in timeline] == ["api", "transfer"]


def test_sdk_login_and_logout_are_recorded_with_their_causes(tenant: Tenant) -> None:
    web = new_user(tenant, {"subscriptions": [{"type": "ChromePush", "token": "w"}]})
    phone = new_user(tenant, {"subscriptions": [{"type": "iOSPush", "token": "p"}]})
    phone_subscription = phone["subscriptions"][0]["id"]
    web_id, phone_id = web["identity"]["onesignal_id"], phone["identity"]["onesignal_id"]

    # Login on the web: identity PATCH on the anonymous user identifies it in place.
    in_place = tenant.patch(
        f"/users/by/onesignal_id/{web_id}/identity", {"identity": {"external_id": "EIDA"}}
    )
    # Login on the phone: the same PATCH conflicts, so the SDK transfers the subscription.
    conflict = tenant.patch(
        f"/users/by/onesignal_id/{phone_id}/identity", {"identity": {"external_id": "EIDA"}}
    )
    transfer = tenant.patch(
        f"/subscriptions/{phone_subscription}/owner", {"identity": {"external_id": "EIDA"}}
    )
    # Logout on the phone: create_user carrying the push subscription.
    logout = tenant.post("/users", {"subscriptions": [{"type": "iOSPush", "token": "p"}]})

    assert in_place.json()["identity"]["onesignal_id"] == web_id
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["code"] == "user-2"
    assert transfer.json()["identity"]["onesignal_id"] == web_id
    assert logout.status_code == 201
    fresh_id = logout.json()["identity"]["onesignal_id"]
    assert fresh_id not in (web_id, phone_id)
    assert "external_id" not in logout.json()["identity"]
    timeline = tenant.get(f"/idledger/subscriptions/{phone_subscription}/ownership").json()[
        "intervals"
    ]
    assert [(i["owner_id"], i["cause"]) for i in timeline] == [
        (phone_id, "api"), (web_id, "login"), (fresh_id, "logout"),
    ]  # fmt: skip
    assert tenant.get(f"/users/by/onesignal_id/{phone_id}").status_code == 404  # retired
    as_of = tenant.get(f"/idledger/users/{phone_id}/as_of").json()
    assert (as_of["status"], as_of["survivor_id"]) == ("retired", web_id)


def test_aliases_by_subscription(tenant: Tenant) -> None:
    user = new_user(tenant, {"identity": {"external_id": "EIDA"}, "subscriptions": [push("t")]})
    subscription_id = user["subscriptions"][0]["id"]

    added = tenant.patch(
        f"/subscriptions/{subscription_id}/user/identity", {"identity": {"crm": "9"}}
    )

    assert added.status_code == 200
    assert added.json()["identity"]["crm"] == "9"
    assert tenant.get("/users/by/crm/9").json()["identity"] == added.json()["identity"]


def test_device_integer_codes_beyond_32_bits_are_refused(tenant: Tenant) -> None:
    new_user(tenant, {"identity": {"external_id": "EIDA"}})
    huge = {**push("t"), "notification_types": 2**40}

    response = tenant.post("/users/by/external_id/EIDA/subscriptions", {"subscription": huge})

    assert response.status_code == 400
    assert "notification_types" in response.text
    user = tenant.get("/users/by/external_id/EIDA").json()
    assert user["subscriptions"] == []
