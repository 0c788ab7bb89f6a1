"""Idempotent under races: many clients sending the same request at the same
moment, over real HTTP to a real `idledger serve` (one process, and on PostgreSQL
two worker processes), all get the answer OneSignal gives to the one request:
one creates (201), the others find what it created (200), with the same body, and
nothing is created twice. No 409 for a body naming one user, no 404 for what the
winner just created, no 5xx."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from idledger.domain.ledger import Ledger
from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY, fresh_store, store_url
from tests.serving import serving

CLIENTS = 50
ROUNDS = 3
Send = Callable[[httpx.Client], httpx.Response]


# 50 requests at once on 2 cores (and, with two workers, one projector for both):
# read-your-writes may take longer than the 2 s default under CI load.
PATIENT = {"IDLEDGER_CONSISTENCY_TIMEOUT": "15"}


class App:
    """A fresh app on the server, and CLIENTS connected clients presenting its key."""

    def __init__(self, base: str, pool: ThreadPoolExecutor) -> None:
        admin = {"Authorization": f"Key {ADMIN_KEY}"}
        created = httpx.post(f"{base}/apps", json={"name": "races"}, headers=admin)
        assert created.status_code == 200, created.text
        self.base = f"{base}/apps/{created.json()['id']}"
        self.headers = {"Authorization": f"Key {created.json()['basic_auth_key']}"}
        self.pool = pool
        self.clients = list(pool.map(lambda _: self._connected(), range(CLIENTS)))

    def _connected(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base, headers=self.headers, timeout=60, verify=False)
        client.get(f"{self.base.split('/apps/')[0]}/health")  # connect before any race
        return client

    def all_at_once(self, send: Send) -> list[httpx.Response]:
        """Every client sends at the same moment (behind a barrier)."""
        barrier = threading.Barrier(len(self.clients))

        def one(client: httpx.Client) -> httpx.Response:
            barrier.wait(timeout=30)
            return send(client)

        return list(self.pool.map(one, self.clients))

    def send(self, send: Send) -> httpx.Response:
        return send(self.clients[0])

    def get(self, path: str) -> Any:
        response = self.clients[0].get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def close(self) -> None:
        for client in self.clients:
            client.close()


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def explain(responses: list[httpx.Response]) -> str:
    return "; ".join(sorted({f"{r.status_code} {r.text[:200]}" for r in responses}))


@contextmanager
def user_count(store: dict[str, str]) -> Iterator[Callable[[], int]]:
    """Counts user creations in the log (the truth, whatever the read models say).
    Opened before the server, on one connection: the server's pools may take the
    rest of PostgreSQL's connections during a race."""
    ledger = Ledger(
        {**store, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "0"}, index_key=INDEX_KEY
    )

    def count() -> int:
        notifications = ledger.recorder.select_notifications(start=1, limit=1_000_000)
        return sum(n.topic.endswith("user:Created") for n in notifications)

    try:
        count()
        yield count
    finally:
        ledger.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """One store of each kind for the module: one server serves every race on it."""
    with fresh_store(request.param) as env:
        yield env


@pytest.fixture(scope="module")
def users_created(store: dict[str, str]) -> Iterator[Callable[[], int]]:
    with user_count(store) as count:
        yield count


@pytest.fixture(scope="module")
def server(
    store: dict[str, str],
    users_created: Callable[[], int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    users_created()  # opened before the server: see user_count
    with serving(
        store_url(store), tmp_path_factory.mktemp("server") / "server.log", env=PATIENT
    ) as base:
        yield base


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(CLIENTS) as threads:
        yield threads


@pytest.fixture
def app(server: str, pool: ThreadPoolExecutor) -> Iterator[App]:
    tenant = App(server, pool)
    yield tenant
    tenant.close()


def race_creates(app: App, users_created: Callable[[], int]) -> None:
    for round_ in range(ROUNDS):
        external_id = f"E{round_}"
        before = users_created()

        responses = app.all_at_once(
            lambda c: c.post("/users", json={"identity": {"external_id": external_id}})  # noqa: B023
        )

        assert statuses(responses) == {201: 1, 200: CLIENTS - 1}, explain(responses)
        (onesignal_id,) = {r.json()["identity"]["onesignal_id"] for r in responses}
        assert all(r.json()["identity"]["external_id"] == external_id for r in responses)
        fetched = app.get(f"/users/by/external_id/{external_id}")
        assert fetched["identity"]["onesignal_id"] == onesignal_id
        assert users_created() == before + 1


def test_concurrent_creates_across_two_workers(
    store: dict[str, str],
    users_created: Callable[[], int],
    pool: ThreadPoolExecutor,
    tmp_path: Path,
) -> None:
    """The same race across two uvicorn worker processes (two ledgers, two sets of
    in-process locks; one projector). First in the module, so that it runs before
    the module's server starts on the store: two servers at once would take more
    connections than PostgreSQL allows."""
    if "SQLITE_DBNAME" in store:
        pytest.skip("--workers > 1 needs PostgreSQL (SQLite is the one-process store)")
    with serving(store_url(store), tmp_path / "server.log", workers=2, env=PATIENT) as base:
        app = App(base, pool)
        try:
            race_creates(app, users_created)
        finally:
            app.close()


def test_concurrent_creates_of_one_external_id(app: App, users_created: Callable[[], int]) -> None:
    race_creates(app, users_created)


def test_concurrent_identity_patches_with_one_external_id(app: App) -> None:
    anonymous = app.send(
        lambda c: c.post("/users", json={"subscriptions": [{"type": "iOSPush", "token": "p"}]})
    )
    assert anonymous.status_code == 201, anonymous.text
    onesignal_id = anonymous.json()["identity"]["onesignal_id"]

    responses = app.all_at_once(
        lambda c: c.patch(
            f"/users/by/onesignal_id/{onesignal_id}/identity",
            json={"identity": {"external_id": "P"}},
        )
    )

    assert statuses(responses) == {200: CLIENTS}, explain(responses)
    expected = {"onesignal_id": onesignal_id, "external_id": "P"}
    assert all(r.json()["identity"] == expected for r in responses)
    assert app.get("/users/by/external_id/P")["identity"]["onesignal_id"] == onesignal_id


def test_concurrent_adds_of_one_subscription(app: App) -> None:
    created = app.send(lambda c: c.post("/users", json={"identity": {"external_id": "S"}}))
    assert created.status_code == 201, created.text
    subscription = {"type": "Email", "token": "race@example.org"}

    responses = app.all_at_once(
        lambda c: c.post(
            "/users/by/external_id/S/subscriptions", json={"subscription": subscription}
        )
    )

    assert statuses(responses) == {201: 1, 200: CLIENTS - 1}, explain(responses)
    (subscription_id,) = {r.json()["subscription"]["id"] for r in responses}
    (held,) = app.get("/users/by/external_id/S")["subscriptions"]
    assert (held["id"], held["token"]) == (subscription_id, subscription["token"])


def test_concurrent_device_associations_of_one_token(app: App) -> None:
    device = {
        "oneSignalPushToken": "fcm-race", "platform": "android", "model": "Pixel 8",
        "user_id": "customer-race",
    }  # fmt: skip

    responses = app.all_at_once(lambda c: c.post("/idledger/devices", json=device))

    assert statuses(responses) == {200: CLIENTS}, explain(responses)
    (body,) = {tuple(sorted(r.json().items())) for r in responses}
    answer = dict(body)
    assert answer["external_id"] == "customer-race"
    user = app.get("/users/by/external_id/customer-race")
    assert user["identity"]["onesignal_id"] == answer["onesignal_id"]
    assert [s["id"] for s in user["subscriptions"]] == [answer["subscription_id"]]
    ownership = app.get(f"/idledger/subscriptions/{answer['subscription_id']}/ownership")
    assert len(ownership["intervals"]) == 1  # created on its user, never moved about
