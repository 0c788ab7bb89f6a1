"""idledger's own endpoints: ownership history, users as of an instant, events,
MAU, device association, health and lag; and the HTTP layer's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from idledger.api.main import create_app
from idledger.projections.lock import postgres_conninfo
from idledger.settings import Settings
from tests.api.conftest import ADMIN_KEY, Tenant, new_tenant
from tests.conftest import INDEX_KEY, store_url

MEDIAN = {
    "oneSignalUserId": "player-1", "oneSignalPushToken": "fcm-token-1", "oneSignalSubscribed": True,
    "platform": "android", "appId": "median-app", "appVersion": "3.1", "distribution": "release",
    "hardware": "arm64", "installationId": "install-1", "language": "en", "model": "Pixel 8",
    "os": "Android", "osVersion": "15", "timeZone": "Europe/Paris",
}  # fmt: skip


def test_ownership_timeline_and_owner_at_an_instant(tenant: Tenant) -> None:
    user = tenant.post(
        "/users",
        {"identity": {"external_id": "EIDA"}, "subscriptions": [{"type": "iOSPush", "token": "t"}]},
    ).json()
    subscription_id = user["subscriptions"][0]["id"]
    tenant.post("/users", {"identity": {"external_id": "EIDB"}})
    tenant.patch(f"/subscriptions/{subscription_id}/owner", {"identity": {"external_id": "EIDB"}})

    timeline = tenant.get(f"/idledger/subscriptions/{subscription_id}/ownership").json()[
        "intervals"
    ]
    start = timeline[0]["start"]
    at_start = tenant.get(
        f"/idledger/subscriptions/{subscription_id}/ownership", params={"at": start}
    ).json()
    before = tenant.get(
        f"/idledger/subscriptions/{subscription_id}/ownership",
        params={"at": "2000-01-01T00:00:00Z"},
    ).json()

    assert [i["cause"] for i in timeline] == ["api", "transfer"]
    assert at_start["owner_id"] == user["identity"]["onesignal_id"]
    assert before["owner_id"] is None
    naive = tenant.get(
        f"/idledger/subscriptions/{subscription_id}/ownership", params={"at": "2026-01-01T00:00:00"}
    )
    assert naive.status_code == 400


def test_user_as_of_and_paged_events(tenant: Tenant) -> None:
    created = tenant.post("/users", {"identity": {"external_id": "EIDA"}}).json()
    user_id = created["identity"]["onesignal_id"]
    for level in range(5):
        tenant.patch("/users/by/external_id/EIDA", {"properties": {"tags": {"level": str(level)}}})

    first = tenant.get(f"/idledger/users/{user_id}/events", params={"limit": 4}).json()
    rest = tenant.get(
        f"/idledger/users/{user_id}/events", params={"after": first["next_after"]}
    ).json()
    events = first["events"] + rest["events"]
    middle = events[3]["timestamp"]
    then = tenant.get(f"/idledger/users/{user_id}/as_of", params={"at": middle}).json()

    assert [e["type"] for e in events[:2]] == [
        "idledger.user:Created",
        "idledger.user:ExternalIdSet",
    ]
    assert [e["version"] for e in events] == list(range(1, 8))
    assert rest["next_after"] is None
    assert then["properties"]["tags"] == {"level": "1"}
    assert then["status"] == "live"


def test_mau_for_a_day_and_a_range(tenant: Tenant) -> None:
    user = tenant.post(
        "/users",
        {
            "subscriptions": [
                {"type": "iOSPush", "token": "t"},
                {"type": "Email", "token": "a@b.co"},
            ]
        },
    ).json()
    assert len(user["subscriptions"]) == 2
    device = tenant.post("/idledger/devices", MEDIAN).json()
    today = datetime.now(UTC).date()

    one_day = tenant.get("/idledger/mau", params={"day": today.isoformat()}).json()
    chart = tenant.get(
        "/idledger/mau",
        params={"from": today.isoformat(), "to": (today + timedelta(days=40)).isoformat()},
    ).json()
    bad = tenant.get("/idledger/mau", params={"from": today.isoformat()})

    assert device["external_id"] is None
    assert one_day["days"] == [
        {"day": today.isoformat(), "total": 0, "by_type": {}}
    ]  # no sessions yet
    assert len(chart["days"]) == 41
    assert bad.status_code == 400


def test_median_device_association_is_idempotent(tenant: Tenant, client: TestClient) -> None:
    body = {**MEDIAN, "user_id": "customer-7"}

    first = tenant.post("/idledger/devices", body)
    head = client.get("/ready").json()["log_head"]
    second = tenant.post("/idledger/devices", body)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["external_id"] == "customer-7"
    assert client.get("/ready").json()["log_head"] == head  # the repeat wrote nothing
    user = tenant.get("/users/by/external_id/customer-7").json()
    (subscription,) = user["subscriptions"]
    assert (subscription["type"], subscription["device_model"]) == ("AndroidPush", "Pixel 8")
    assert tenant.post("/idledger/devices", {**body, "user_id": "NULL"}).status_code == 400


def test_health_readiness_and_lag(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    assert set(client.get("/lag").json()) == {"profiles", "ownership", "mau"}


def test_oversized_and_malformed_bodies_are_4xx(tenant: Tenant) -> None:
    huge = {
        "identity": {"external_id": "a"},
        "properties": {"tags": {f"k{i}": "v" * 200 for i in range(2000)}},
    }
    response = tenant.post("/users", huge)
    malformed = tenant.client.post(
        tenant.url("/users"),
        content=b"{not json",
        headers={**tenant.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert malformed.status_code == 400
    assert malformed.json()["errors"][0]["field"]


def test_openapi_documents_400_not_422(client: TestClient) -> None:
    schema: dict[str, Any] = client.get("/openapi.json").json()
    operations = [op for path in schema["paths"].values() for op in path.values()]

    assert len(operations) >= 20
    assert all("422" not in op["responses"] for op in operations)
    assert "/apps/{app_id}/users/by/{alias_label}/{alias_id}" in schema["paths"]


def test_a_store_failure_is_a_503_not_a_500(postgres_env: dict[str, str]) -> None:
    settings = Settings(
        store_url=store_url(postgres_env), index_key=INDEX_KEY.hex(), admin_key=ADMIN_KEY,
        embedded_projector=False,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        tenant = new_tenant(client)
        schema = postgres_env["POSTGRES_SCHEMA"]
        with psycopg.connect(postgres_conninfo(postgres_env), autocommit=True) as connection:
            connection.execute(f'ALTER TABLE "{schema}".idledger_events RENAME TO gone')

        response = tenant.post("/users", {"identity": {"external_id": "EIDA"}})
        ready = client.get("/ready")

    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "store-unavailable"
    assert ready.status_code == 503
