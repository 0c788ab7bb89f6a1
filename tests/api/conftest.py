"""HTTP tests drive the real FastAPI app (lifespan, projector and all) on each store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from idledger.api.main import create_app
from idledger.settings import Settings
from tests.conftest import INDEX_KEY, store_url

ADMIN_KEY = "test-organization-key"


@pytest.fixture
def settings(store: dict[str, str]) -> Settings:
    return Settings(
        store_url=store_url(store), index_key=INDEX_KEY.hex(), admin_key=ADMIN_KEY,
        consistency_timeout=10.0,
    )  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@dataclass
class Tenant:
    """An app and a client that presents its REST API key."""

    client: TestClient
    app_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.api_key}"}

    def url(self, path: str) -> str:
        return f"/apps/{self.app_id}{path}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(self.url(path), headers=self.headers, **kwargs)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(self.url(path), json=body, headers=self.headers)

    def patch(self, path: str, body: Any) -> Any:
        return self.client.patch(self.url(path), json=body, headers=self.headers)

    def delete(self, path: str) -> Any:
        return self.client.delete(self.url(path), headers=self.headers)


def new_tenant(client: TestClient, name: str = "tenant") -> Tenant:
    response = client.post(
        "/apps", json={"name": name}, headers={"Authorization": f"Key {ADMIN_KEY}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Tenant(client, body["id"], body["basic_auth_key"])


@pytest.fixture
def tenant(client: TestClient) -> Tenant:
    return new_tenant(client)
