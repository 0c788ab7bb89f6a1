"""Hostile bodies and paths against every write route: a clear 4xx naming what is
wrong, never a 5xx, never a stopped projector; afterwards another app works."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN_KEY, Tenant, new_tenant

# Strings the stores cannot hold, or that no id may contain.
POISON_STRINGS = {
    "NUL": "a\u0000b",
    "lone low surrogate": "\udfff",
    "lone high surrogate": "x\ud800",
    "bell": "a\u0007b",
    "escape": "\u001b[31m",
}


def _write_routes(subscription_id: str) -> dict[str, tuple[str, str, Any]]:
    """Each write route with a body template; ``"$"`` marks where a string goes."""
    user = "/users/by/external_id/target"
    return {
        "create user": ("POST", "/users", {"identity": {"external_id": "$"}}),
        "create user tags": ("POST", "/users", {
            "identity": {"external_id": "fine"}, "properties": {"tags": {"city": "$"}}}),
        "tag key": ("PATCH", user, {"properties": {"tags": {"$": "v"}}}),
        "update user": ("PATCH", user, {"properties": {"tags": {"k": "$"}, "ip": "$"}}),
        "purchase": ("PATCH", user, {"deltas": {"purchases": [
            {"sku": "$", "amount": "1.00", "iso": "USD"}]}}),
        "alias": ("PATCH", f"{user}/identity", {"identity": {"crm": "$"}}),
        "create subscription": ("POST", f"{user}/subscriptions", {
            "subscription": {"type": "AndroidPush", "token": "$"}}),
        "device model": ("POST", f"{user}/subscriptions", {
            "subscription": {"type": "AndroidPush", "token": "t2", "device_model": "$"}}),
        "update subscription": ("PATCH", f"/subscriptions/{subscription_id}", {
            "subscription": {"token": "$"}}),
        "transfer": ("PATCH", f"/subscriptions/{subscription_id}/owner", {
            "identity": {"external_id": "$"}}),
        "identity by subscription": ("PATCH", f"/subscriptions/{subscription_id}/user/identity",
                                     {"identity": {"external_id": "$"}}),
        "device association": ("POST", "/idledger/devices", {
            "user_id": "$", "oneSignalPushToken": "tok", "platform": "android"}),
        "device token": ("POST", "/idledger/devices", {
            "user_id": "u1", "oneSignalPushToken": "$", "platform": "android"}),
    }  # fmt: skip


def _fill(template: Any, value: str) -> Any:
    if template == "$":
        return value
    if isinstance(template, dict):
        return {_fill(k, value): _fill(v, value) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(item, value) for item in template]
    return template


def _send(tenant: Tenant, method: str, path: str, content: bytes, content_type: str) -> Any:
    headers = {**tenant.headers, "Content-Type": content_type}
    return tenant.client.request(method, tenant.url(path), content=content, headers=headers)


def _setup(tenant: Tenant) -> str:
    created = tenant.post("/users", {
        "identity": {"external_id": "target"},
        "subscriptions": [{"type": "AndroidPush", "token": "hostile-test-token"}]})  # fmt: skip
    assert created.status_code == 201, created.text
    subscription_id: str = created.json()["subscriptions"][0]["id"]
    return subscription_id


def test_unstorable_strings_are_refused_with_400_naming_the_field(tenant: Tenant) -> None:
    routes = _write_routes(_setup(tenant))
    wrong = []
    for route, (method, path, template) in routes.items():
        for name, value in POISON_STRINGS.items():
            # ensure_ascii: surrogates travel as \\u escapes, as a hostile client sends them
            body = json.dumps(_fill(template, value)).encode()
            response = _send(tenant, method, path, body, "application/json")
            errors = response.json().get("errors", [{}]) if response.content else [{}]
            if response.status_code != 400 or not errors[0].get("field"):
                wrong.append((route, name, response.status_code, response.text[:200]))
    assert wrong == []
    assert not tenant.get("/users/by/external_id/target").json()["properties"].get("tags")


def test_malformed_bodies_get_a_4xx_never_a_5xx(tenant: Tenant) -> None:
    routes = _write_routes(_setup(tenant))
    bodies = {
        "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "application/json", {400, 413}),
        "1 MB tag value": (
            json.dumps({"properties": {"tags": {"k": "v" * 1_000_000}}}).encode(),
            "application/json", {413},
        ),
        "300 character tag value": (
            json.dumps({"properties": {"tags": {"k": "v" * 300}}}).encode(),
            "application/json", {400},
        ),
        "not JSON": (b"{", "application/json", {400}),
        "invalid UTF-8": (b'{"identity": {"external_id": "\xff\xfe"}}', "application/json", {400}),
        "wrong content type": (b"external_id=alice", "text/plain", {400, 415}),
        "form content type": (b"external_id=alice", "application/x-www-form-urlencoded",
                              {400, 415}),
        "JSON array": (b"[1, 2]", "application/json", {400}),
        "JSON string": (b'"\\u0000"', "application/json", {400}),
    }  # fmt: skip
    wrong = []
    for route, (method, path, _) in routes.items():
        for name, (content, content_type, allowed) in bodies.items():
            response = _send(tenant, method, path, content, content_type)
            if response.status_code not in allowed or "errors" not in response.json():
                wrong.append((route, name, response.status_code, response.text[:200]))
    assert wrong == []


def test_hostile_path_segments_are_refused_without_touching_the_store(tenant: Tenant) -> None:
    _setup(tenant)
    paths = [
        "/users/by/external_id/a%00b",
        "/users/by/external_id/a%07b",
        "/users/by/external_id/%ED%BF%BF",  # a surrogate, encoded as (invalid) UTF-8
        "/users/by/external_id/%FF",
        "/users/by/cr%00m/x",
        "/users/by/external_id/a%00b/identity",
    ]
    wrong = []
    for path in paths:
        for method in ("GET", "PATCH", "DELETE"):
            response = _send(tenant, method, path, b"{}", "application/json")
            if response.status_code not in (400, 404, 405) or response.status_code >= 500:
                wrong.append((method, path, response.status_code, response.text[:200]))
            elif response.status_code == 400:
                assert response.json()["errors"][0]["field"]
    assert wrong == []


def test_after_hostile_input_the_ledger_still_serves_every_app(
    client: TestClient, tenant: Tenant
) -> None:
    subscription_id = _setup(tenant)
    for method, path, template in _write_routes(subscription_id).values():
        for value in POISON_STRINGS.values():
            _send(tenant, method, path, json.dumps(_fill(template, value)).encode(),
                  "application/json")  # fmt: skip
    admin = {"Authorization": f"Key {ADMIN_KEY}"}
    refused_app = client.post("/apps", json={"name": "bad\u0000name"}, headers=admin)
    other = new_tenant(client, "other")

    created = other.post("/users", {"identity": {"external_id": "after-hostile"}})
    fetched = other.get("/users/by/external_id/after-hostile")

    assert refused_app.status_code == 400
    assert created.status_code == 201, created.text
    assert fetched.status_code == 200
    assert client.get("/ready").status_code == 200
    assert client.app.state.runtime.projector.error is None  # type: ignore[attr-defined]
    assert client.app.state.runtime.models.dead_letters() == {  # type: ignore[attr-defined]
        "profiles": 0, "ownership": 0, "mau": 0,
    }  # fmt: skip
