"""OneSignal user endpoints over HTTP: create, view, update, delete, aliases."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Tenant

PHONE = {"type": "iOSPush", "token": "apns-token-1", "device_model": "iPhone15,2"}


def create(tenant: Tenant, body: dict[str, Any]) -> dict[str, Any]:
    response = tenant.post("/users", body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_create_then_view_by_every_alias(tenant: Tenant) -> None:
    created = create(
        tenant,
        {
            "identity": {"external_id": "alice/1@example.com", "crm": "42"},
            "properties": {"tags": {"level": 7, "vip": True}, "language": "fr", "lat": 48.85},
            "subscriptions": [PHONE],
        },
    )
    identity = created["identity"]

    for path in (
        "/users/by/external_id/alice%2F1%40example.com",
        f"/users/by/onesignal_id/{identity['onesignal_id']}",
        "/users/by/crm/42",
    ):
        response = tenant.get(path)
        assert response.status_code == 200, path
        assert response.json() == created
    assert created["properties"] == {
        "tags": {"level": "7", "vip": "true"},
        "language": "fr",
        "lat": 48.85,
    }
    (subscription,) = created["subscriptions"]
    assert subscription["token"] == "apns-token-1"
    assert subscription["device_model"] == "iPhone15,2"
    assert None not in subscription.values()


def test_create_with_an_existing_external_id_returns_that_user(tenant: Tenant) -> None:
    first = create(tenant, {"identity": {"external_id": "EIDA"}})

    again = tenant.post(
        "/users", {"identity": {"external_id": "EIDA"}, "properties": {"tags": {"a": "1"}}}
    )

    assert again.status_code == 200
    assert again.json()["identity"] == first["identity"]
    assert again.json()["properties"]["tags"] == {"a": "1"}


def test_identity_of_two_users_is_a_409_naming_the_aliases(tenant: Tenant) -> None:
    create(tenant, {"identity": {"external_id": "EIDA"}})
    create(tenant, {"identity": {"crm": "42"}})

    response = tenant.post("/users", {"identity": {"external_id": "EIDA", "crm": "42"}})

    assert response.status_code == 409
    (error,) = response.json()["errors"]
    assert error["code"] == "user-2"
    assert error["meta"]["conflicting_aliases"] == {"external_id": "EIDA", "crm": "42"}


def test_bad_users_are_refused_with_the_field_named(tenant: Tenant) -> None:
    cases = [
        ({}, "identity"),
        ({"identity": {"external_id": "NULL"}}, "external_id"),
        (
            {"identity": {"external_id": "a"}, "properties": {"tags": {"t": [1]}}},
            "properties.tags.t",
        ),
        (
            {"identity": {"external_id": "a"}, "properties": {"timezone_id": "Mars/Base"}},
            "timezone_id",
        ),
        ({"subscriptions": [{"type": "Pager", "token": "x"}]}, "subscriptions.0.type"),
        (
            {"identity": {"external_id": "a"}, "properties": {"tags": {"template": "x"}}},
            "tags.template",
        ),
    ]
    for body, field in cases:
        response = tenant.post("/users", body)

        assert response.status_code == 400, body
        assert any(field in (e.get("field") or "") for e in response.json()["errors"]), (
            response.json()
        )
    assert tenant.get("/users/by/external_id/a").status_code == 404  # nothing half-written
    unknown = tenant.post("/users", {"identity": {"onesignal_id": "not-a-user"}})
    assert unknown.status_code == 404


def test_update_merges_tags_deletes_empty_ones_and_records_purchases(tenant: Tenant) -> None:
    create(
        tenant, {"identity": {"external_id": "EIDA"}, "properties": {"tags": {"a": "1", "b": "2"}}}
    )

    response = tenant.patch(
        "/users/by/external_id/EIDA",
        {
            "properties": {"tags": {"a": "", "c": 3}, "country": "FR"},
            "deltas": {"purchases": [{"sku": "gold", "amount": "1.99", "iso": "EUR"}]},
        },
    )

    assert response.status_code == 202
    properties = tenant.get("/users/by/external_id/EIDA").json()["properties"]
    assert properties["tags"] == {"b": "2", "c": "3"}
    assert properties["country"] == "FR"
    assert properties["purchases"] == [{"sku": "gold", "amount": "1.99", "iso": "EUR", "count": 1}]
    assert response.json()["properties"] == properties


def test_aliases_are_added_viewed_and_deleted(tenant: Tenant) -> None:
    create(tenant, {"identity": {"external_id": "EIDA"}})
    other = create(tenant, {"identity": {"external_id": "EIDB"}})

    added = tenant.patch("/users/by/external_id/EIDA/identity", {"identity": {"crm": "42"}})
    taken = tenant.patch("/users/by/external_id/EIDB/identity", {"identity": {"crm": "42"}})
    removed = tenant.delete("/users/by/external_id/EIDA/identity/crm")
    refused = tenant.delete("/users/by/external_id/EIDA/identity/onesignal_id")

    assert added.status_code == 200
    assert added.json()["identity"]["crm"] == "42"
    assert taken.status_code == 409
    assert removed.status_code == 200
    assert "crm" not in removed.json()["identity"]
    assert refused.status_code == 400
    assert tenant.get("/users/by/external_id/EIDB/identity").json() == {
        "identity": other["identity"]
    }
    assert tenant.get("/users/by/crm/42").status_code == 404


def test_delete_user_removes_it_and_frees_its_external_id(tenant: Tenant) -> None:
    create(tenant, {"identity": {"external_id": "EIDA"}, "subscriptions": [PHONE]})

    deleted = tenant.delete("/users/by/external_id/EIDA")

    assert deleted.status_code == 200
    assert deleted.json() == {}
    assert tenant.get("/users/by/external_id/EIDA").status_code == 404
    assert tenant.delete("/users/by/external_id/EIDA").status_code == 404
    create(tenant, {"identity": {"external_id": "EIDA"}, "subscriptions": [PHONE]})


def test_unknown_fields_are_ignored(tenant: Tenant) -> None:
    created = create(
        tenant,
        {
            "identity": {"external_id": "EIDA"},
            "future_field": 1,
            "subscriptions": [{**PHONE, "app_id": "x"}],
        },
    )

    assert created["identity"]["external_id"] == "EIDA"
