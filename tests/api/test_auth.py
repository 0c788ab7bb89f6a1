"""Per-app keys: a key for app A never reads, changes or confirms anything in app B."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN_KEY, Tenant, new_tenant

ADMIN = {"Authorization": f"Key {ADMIN_KEY}"}


def test_requests_without_a_valid_key_are_401(tenant: Tenant) -> None:
    path = tenant.url("/users/by/external_id/x")
    for headers in ({}, {"Authorization": "Key wrong"}, {"Authorization": "Bearer x"}):
        response = tenant.client.get(path, headers=headers)

        assert response.status_code == 401
        assert response.json()["errors"][0]["code"] == "unauthorized"


def test_one_apps_key_cannot_reach_another_app(client: TestClient) -> None:
    alpha, beta = new_tenant(client, "alpha"), new_tenant(client, "beta")
    created = beta.post("/users", {"identity": {"external_id": "EIDB"}}).json()
    beta_user = created["identity"]["onesignal_id"]

    wrong_app = client.get(beta.url("/users/by/external_id/EIDB"), headers=alpha.headers)
    unknown_app = client.get(
        "/apps/00000000-0000-4000-8000-000000000000/users/by/external_id/EIDB",
        headers=alpha.headers,
    )
    by_id = alpha.get(f"/users/by/onesignal_id/{beta_user}")
    history = alpha.get(f"/idledger/users/{beta_user}/as_of")
    change = alpha.patch(
        f"/users/by/onesignal_id/{beta_user}", {"properties": {"tags": {"a": "1"}}}
    )

    assert wrong_app.status_code == unknown_app.status_code == 401
    assert wrong_app.json() == unknown_app.json()
    assert [by_id.status_code, history.status_code, change.status_code] == [404, 404, 404]
    assert beta.get("/users/by/external_id/EIDB").json()["properties"]["tags"] == {}


def test_apps_are_managed_with_the_organization_key(client: TestClient) -> None:
    refused = client.post("/apps", json={"name": "x"}, headers={"Authorization": "Key nope"})
    tenant = new_tenant(client, "managed")
    viewed = client.get(f"/apps/{tenant.app_id}", headers=ADMIN)

    assert refused.status_code == 401
    assert viewed.status_code == 200
    assert viewed.json()["name"] == "managed"
    assert "basic_auth_key" not in viewed.json()


def test_a_rotated_key_replaces_the_old_one_at_once(tenant: Tenant) -> None:
    old_headers = tenant.headers

    rotated = tenant.client.post(f"/apps/{tenant.app_id}/api_key", headers=ADMIN)
    tenant.api_key = rotated.json()["basic_auth_key"]

    assert rotated.status_code == 200
    assert (
        tenant.client.post(
            tenant.url("/users"), json={"identity": {"external_id": "a"}}, headers=old_headers
        ).status_code
        == 401
    )
    assert tenant.post("/users", {"identity": {"external_id": "a"}}).status_code == 201
