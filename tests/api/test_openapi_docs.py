"""The OpenAPI document explains itself: how to authorize, which errors each route
can give, examples that the routes' own models accept and that the real API
answers with success; and /docs and /redoc load everything from this server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from idledger.api.routes import apps, devices, health, history, subscriptions, users
from idledger.api.schemas import ErrorBody
from tests.api.conftest import ADMIN_KEY, Tenant

JSON = "application/json"
Operation = tuple[str, str, dict[str, Any]]
# The routers' own routes (their paths hold the prefix): the app nests them.
ROUTERS = [
    route
    for module in (apps, users, subscriptions, history, devices, health)
    for route in module.router.routes
]


def operations(client: TestClient) -> Iterator[Operation]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    for path, methods in response.json()["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def examples(content: dict[str, Any]) -> list[Any]:
    return [example["value"] for example in content.get(JSON, {}).get("examples", {}).values()]


def test_every_route_says_how_to_authorize(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    for name in ("AppKey", "OrganizationKey"):
        assert schemes[name]["type"] == "apiKey"
        assert (schemes[name]["in"], schemes[name]["name"]) == ("header", "Authorization")
        assert "`Key <" in schemes[name]["description"]
    for path, method, operation in operations(client):
        expected: list[dict[str, list[str]]] | None
        if path in ("/apps", "/apps/{app_id}", "/apps/{app_id}/api_key"):
            expected = [{"OrganizationKey": []}]  # creating, viewing, re-keying apps
        elif path.startswith("/apps/{app_id}/"):
            expected = [{"AppKey": []}]
        else:
            expected = None
        assert operation.get("security") == expected, (method, path)
        # The key is the scheme's business, not a loose optional header.
        headers = [p["name"].lower() for p in operation.get("parameters", [])]
        assert "authorization" not in headers, (method, path)


def test_each_route_lists_only_the_errors_it_can_give(client: TestClient) -> None:
    listed = {}
    for path, method, operation in operations(client):
        statuses = {int(status) for status in operation["responses"]}
        listed[method, path] = statuses
        if method == "get":
            assert not statuses & {409, 413}, (method, path)  # reads conflict with nothing
        has_body = "requestBody" in operation
        assert (413 in statuses) == has_body, (method, path)
        if has_body:
            assert 400 in statuses, (method, path)
        for status, response in operation["responses"].items():
            if int(status) >= 400 and path.startswith("/apps"):
                assert response["content"][JSON]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }
                bodies = examples(response["content"])
                assert bodies, (method, path, status)
                for body in bodies:
                    ErrorBody.model_validate(body)
            if int(status) == 503:
                assert "Retry-After" in response["headers"], (method, path)
    assert 422 not in set().union(*listed.values())
    # What some routes can give, exactly.
    assert listed["get", "/apps/{app_id}/users/by/{alias_label}/{alias_id}"] == {
        200, 400, 401, 404, 503,
    }  # fmt: skip
    assert listed["get", "/apps/{app_id}/idledger/mau"] == {200, 400, 401, 503}
    assert listed["post", "/apps/{app_id}/users"] == {200, 201, 400, 401, 404, 409, 413, 503}
    assert listed["get", "/health"] == {200}
    assert listed["get", "/ready"] == {200, 503}


def test_examples_are_what_the_models_accept(client: TestClient) -> None:
    documented = {(method, path): operation for path, method, operation in operations(client)}
    checked = 0
    for route in ROUTERS:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = documented[method.lower(), route.path]
            if route.body_field is not None:
                requests = examples(operation["requestBody"]["content"])
                assert requests, (method, route.path)
                annotation = route.body_field.field_info.annotation
                assert annotation is not None
                body: TypeAdapter[Any] = TypeAdapter(annotation)
                for value in requests:
                    body.validate_python(value)
                    checked += 1
            for status, response in operation["responses"].items():
                answers = examples(response.get("content", {}))
                assert answers, (method, route.path, status)
                model = _model_of(route, int(status))
                for value in answers:
                    if model is not None:
                        TypeAdapter(model).validate_python(value)
                        checked += 1
    assert checked > 60


def _model_of(route: APIRoute, status: int) -> Any:
    if status >= 400:
        return ErrorBody if route.path.startswith("/apps") else None
    if status == route.status_code or (route.status_code is None and status == 200):
        return route.response_model
    return route.responses.get(status, {}).get("model")


def _substitute(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: values[match.group(1)], path)


# Every route with a request body, in an order in which each example makes sense.
EXAMPLE_RUN = [
    ("post", "/apps/{app_id}/users"),
    ("patch", "/apps/{app_id}/users/by/{alias_label}/{alias_id}"),
    ("patch", "/apps/{app_id}/users/by/{alias_label}/{alias_id}/identity"),
    ("post", "/apps/{app_id}/users/by/{alias_label}/{alias_id}/subscriptions"),
    ("patch", "/apps/{app_id}/subscriptions/{subscription_id}"),
    ("patch", "/apps/{app_id}/subscriptions/{subscription_id}/user/identity"),
    ("patch", "/apps/{app_id}/subscriptions/{subscription_id}/owner"),
    ("post", "/apps/{app_id}/idledger/devices"),
    ("post", "/apps"),
]


def test_the_request_examples_succeed_on_the_real_api(client: TestClient, tenant: Tenant) -> None:
    documented = {(method, path): operation for path, method, operation in operations(client)}
    with_body = {key for key, operation in documented.items() if "requestBody" in operation}
    assert set(EXAMPLE_RUN) == with_body
    assert tenant.post("/users", {"identity": {"external_id": "bob"}}).status_code == 201
    values = {"app_id": tenant.app_id, "alias_label": "external_id", "alias_id": "alice"}
    for method, path in EXAMPLE_RUN:
        operation = documented[method, path]
        for name, value in operation["requestBody"]["content"][JSON]["examples"].items():
            key = ADMIN_KEY if path == "/apps" else tenant.api_key
            response = client.request(
                method.upper(), _substitute(path, values), json=value["value"],
                headers={"Authorization": f"Key {key}"},
            )  # fmt: skip
            assert str(response.status_code) in operation["responses"], (method, path, name)
            assert response.is_success, (method, path, name, response.text)
            if path.endswith("/subscriptions") and name == "email":
                values["subscription_id"] = response.json()["subscription"]["id"]


ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_this_server(client: TestClient, page: str) -> None:
    response = client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No absolute or protocol-relative URL, so nothing comes from a CDN; and the
    # browser is told to load nothing from elsewhere either.
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", html), html
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    references = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html)
    references += re.findall(r"url: '([^']+)'", html)
    assets = [ref for ref in references if ref.startswith("/docs/assets/")]
    assert "/openapi.json" in references
    assert len(assets) >= 2  # the script and the favicon, and Swagger UI's stylesheet
    for reference in references:
        assert reference.startswith("/"), reference
        loaded = client.get(reference)
        assert loaded.status_code == 200, reference
        assert loaded.content, reference
        suffix = reference[reference.rfind(".") :]
        expected = ASSET_TYPES.get(suffix, JSON)
        assert loaded.headers["content-type"].startswith(expected), reference


def test_unknown_assets_are_404_not_500(client: TestClient) -> None:
    assert client.get("/docs/assets/swagger-ui/nothing.js").status_code == 404
    assert client.get("/docs/assets/../main.py").status_code == 404
