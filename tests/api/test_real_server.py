"""The real server process (`idledger serve` on a free port), driven over TCP by
httpx and by OneSignal's official Python client, configured only with our host
and keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import onesignal
import pytest
from onesignal.api import default_api
from onesignal.model.app import App
from onesignal.model.properties_object import PropertiesObject
from onesignal.model.subscription import Subscription
from onesignal.model.subscription_body import SubscriptionBody
from onesignal.model.transfer_subscription_request_body import TransferSubscriptionRequestBody
from onesignal.model.update_user_request import UpdateUserRequest
from onesignal.model.user import User
from onesignal.model.user_identity_body import UserIdentityBody

from tests.api.conftest import ADMIN_KEY
from tests.conftest import store_url
from tests.serving import serving


@pytest.fixture
def server(store: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with serving(store_url(store), tmp_path / "server.log", access_log=True) as base:
        yield base


def test_the_served_api_over_tcp(server: str) -> None:
    admin = {"Authorization": f"Key {ADMIN_KEY}"}
    app = httpx.post(f"{server}/apps", json={"name": "tcp"}, headers=admin).json()
    headers = {"Authorization": f"Key {app['basic_auth_key']}"}
    users = f"{server}/apps/{app['id']}/users"

    created = httpx.post(users, json={"identity": {"external_id": "a+b/c"}}, headers=headers)
    fetched = httpx.get(f"{users}/by/external_id/a%2Bb%2Fc", headers=headers)

    assert created.status_code == 201
    assert fetched.status_code == 200
    assert fetched.json() == created.json()


def test_the_official_onesignal_client_drives_the_server(server: str) -> None:
    configuration = onesignal.Configuration(host=server, organization_api_key=ADMIN_KEY)
    with onesignal.ApiClient(configuration) as client:
        app = default_api.DefaultApi(client).create_app(App(name="official client"))
    configuration = onesignal.Configuration(host=server, rest_api_key=app.basic_auth_key)
    with onesignal.ApiClient(configuration) as client:
        api = default_api.DefaultApi(client)
        phone = Subscription(type="iOSPush", token="official-token", enabled=True)

        created = api.create_user(app.id, User(subscriptions=[phone]))
        anonymous_id = created.identity["onesignal_id"]
        identified = api.create_alias(
            app.id, "onesignal_id", anonymous_id, UserIdentityBody(identity={"external_id": "EIDA"})
        )
        api.update_user(
            app.id, "external_id", "EIDA",
            UpdateUserRequest(properties=PropertiesObject(tags={"plan": "gold"}, language="fr")),
        )  # fmt: skip
        api.create_alias(app.id, "external_id", "EIDA", UserIdentityBody(identity={"crm": "42"}))
        other = api.create_user(app.id, User(identity={"external_id": "EIDB"}))
        subscription_id = created.subscriptions[0].id
        moved = api.transfer_subscription(
            app.id, subscription_id,
            TransferSubscriptionRequestBody(identity={"external_id": "EIDB"}),
        )  # fmt: skip
        email = api.create_subscription(
            app.id,
            "crm",
            "42",
            SubscriptionBody(subscription=Subscription(type="Email", token="a@b.co")),
        )
        user = api.get_user(app.id, "crm", "42")
        api.delete_user(app.id, "external_id", "EIDB")

        assert identified.identity["external_id"] == "EIDA"
        assert identified.identity["onesignal_id"] == anonymous_id
        assert moved.identity["onesignal_id"] == other.identity["onesignal_id"]
        assert email.subscription.type == "Email"
        assert user.properties.tags == {"plan": "gold"}
        assert user.properties.language == "fr"
        assert [s.type for s in user.subscriptions] == ["Email"]
        with pytest.raises(onesignal.ApiException) as missing:
            api.get_user(app.id, "external_id", "EIDB")
        assert missing.value.status == 404


def test_an_oversized_chunked_body_is_refused_with_413(server: str) -> None:
    admin = {"Authorization": f"Key {ADMIN_KEY}"}
    app = httpx.post(f"{server}/apps", json={"name": "chunked"}, headers=admin).json()
    headers = {"Authorization": f"Key {app['basic_auth_key']}", "Content-Type": "application/json"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"identity": {"external_id": "big"}, "properties": {"tags": {"k": "'
        for _ in range(64):
            yield b"v" * 8192
        yield b'"}}}'

    response = httpx.post(f"{server}/apps/{app['id']}/users", content=chunks(), headers=headers)
    small = httpx.post(
        f"{server}/apps/{app['id']}/users", json={"identity": {"external_id": "small"}},
        headers=headers,
    )  # fmt: skip

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "body-too-large"
    assert small.status_code == 201
