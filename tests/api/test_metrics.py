"""`/metrics`: scraped from a real `idledger serve` over TCP, before and after
requests, on both stores; a lost optimistic-concurrency race and a store outage
as the counters see them; several workers adding up into one scrape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eventsourcing.persistence import OperationalError
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from idledger.api import metrics
from idledger.api.main import create_app
from idledger.api.metrics import LedgerCounts
from idledger.domain.ledger import Ledger
from idledger.domain.unit_of_work import UnitOfWork
from idledger.domain.user import User
from idledger.settings import Settings
from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY, FakeClock, store_url
from tests.serving import serving

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
BY_ALIAS = "/apps/{app_id}/users/by/{alias_label}/{alias_id}"
READ_MODELS = ("mau", "ownership", "profiles")
PERSONAL = ("secret-bob-88", "bob88@example.org")


def scrape(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not yet seen (a counter that never moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def get_metrics(base: str) -> tuple[str, Samples]:
    response = httpx.get(f"{base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text, scrape(response.text)


def log_head(base: str) -> int:
    head: int = httpx.get(f"{base}/ready").json()["log_head"]
    return head


@pytest.fixture
def server(store: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with serving(store_url(store), tmp_path / "server.log") as base:
        yield base


def test_a_scrape_shows_what_the_requests_did(server: str) -> None:
    admin = {"Authorization": f"Key {ADMIN_KEY}"}
    app = httpx.post(f"{server}/apps", json={"name": "metrics"}, headers=admin).json()
    headers = {"Authorization": f"Key {app['basic_auth_key']}"}
    users = f"{server}/apps/{app['id']}/users"
    head_before = log_head(server)
    _, before = get_metrics(server)

    bob = {
        "identity": {"external_id": "secret-bob-88"},
        "subscriptions": [{"type": "Email", "token": "bob88@example.org"}],
    }
    assert httpx.post(users, json=bob, headers=headers).status_code == 201
    for _ in range(3):
        assert httpx.get(f"{users}/by/external_id/secret-bob-88", headers=headers).is_success
    assert httpx.get(f"{users}/by/external_id/nobody", headers=headers).status_code == 404
    clash = {"identity": {"external_id": "secret-bob-88", "crm": "1"}}
    assert httpx.post(users, json=clash, headers=headers).status_code == 200  # bob again
    httpx.post(users, json={"identity": {"external_id": "carol"}}, headers=headers)
    both = {"identity": {"external_id": "carol", "crm": "1"}}  # two users: 409 user-2
    assert httpx.post(users, json=both, headers=headers).status_code == 409
    assert httpx.get(f"{server}/no/such/secret-bob-88").status_code == 404
    head_after = log_head(server)
    text, after = get_metrics(server)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "idledger_http_requests_total"
    assert moved(requests, method="POST", route="/apps/{app_id}/users", status="201") == 2
    assert moved(requests, method="GET", route=BY_ALIAS, status="200") == 3
    assert moved(requests, method="GET", route=BY_ALIAS, status="404") == 1
    assert moved(requests, method="POST", route="/apps/{app_id}/users", status="409") == 1
    assert moved(requests, method="GET", route="<unmatched>", status="404") == 1
    latency = "idledger_http_request_duration_seconds_count"
    assert moved(latency, method="GET", route=BY_ALIAS) == 4
    assert moved("idledger_http_request_duration_seconds_sum", method="GET", route=BY_ALIAS) > 0
    commands = "idledger_commands_total"
    assert moved(commands, command="create_user", outcome="ok") == 3
    assert moved(commands, command="create_user", outcome="conflict") == 1
    # Every event in the log since the first scrape was appended by this process.
    assert head_after > head_before
    assert moved("idledger_events_appended_total") == head_after - head_before
    assert ("idledger_write_conflicts_total", frozenset()) in after
    # Projection lag, computed at scrape time: writes waited for the read models.
    for name in READ_MODELS:
        assert value(after, "idledger_projection_lag_events", read_model=name) == 0
        assert ("idledger_projection_lag_seconds", frozenset({("read_model", name)})) in after
        assert value(after, "idledger_projection_dead_letters", read_model=name) == 0
    assert value(after, "idledger_store_up") == 1
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_cpu_seconds_total") > 0
    # Templates, never paths: no id, alias, token or app id in the scrape.
    for secret in (*PERSONAL, app["id"], "nobody", "/no/such"):
        assert secret not in text


def test_a_lost_race_is_counted_as_a_conflict(store: dict[str, str]) -> None:
    """The command's first attempt loses to another writer of the same user; it
    is re-run and succeeds, and the conflict is counted once."""
    racing = Ledger(store, index_key=INDEX_KEY, clock=FakeClock())
    rival = Ledger(store, index_key=INDEX_KEY, clock=FakeClock())
    try:
        counts = LedgerCounts(racing)
        app_id = racing.create_app("race").app_id
        user_id = racing.create_user(app_id, external_id="racer").user_id
        attempts: list[int] = []

        def tag_after_the_rival(uow: UnitOfWork, user: User) -> None:
            attempts.append(1)
            if len(attempts) == 1:  # the rival saves the user's next version first
                rival.change_tags(app_id, user_id, {"by": "rival"})
            user.change_tags({"by": "racer"}, uow.at)

        before = _counter("idledger_write_conflicts_total")
        racing._on_user(app_id, user_id, tag_after_the_rival)
        counts.after_write()

        assert len(attempts) == 2
        assert racing.read(app_id).user(user_id).tags == {"by": "racer"}
        assert _counter("idledger_write_conflicts_total") - before == 1
    finally:
        racing.close()
        rival.close()


def _counter(name: str) -> float:
    for metric in (metrics.CONFLICTS, metrics.EVENTS_APPENDED):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
    raise AssertionError(f"no {name}")


def test_an_outage_is_counted_and_the_scrape_still_answers(client: TestClient) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    before = scrape(client.get("/metrics").text)

    runtime.gate.trip(OperationalError("connection refused"))
    during = scrape(client.get("/metrics").text)

    errors = "idledger_store_errors_total"
    assert (
        value(during, errors, kind="OperationalError")
        - value(before, errors, kind="OperationalError")
        >= 1
    )
    assert value(during, "idledger_store_up") == 0
    assert not any(name.startswith("idledger_projection_") for name, _ in during)
    # The store never went away: the gate's probe opens it again by itself.
    deadline = time.monotonic() + 30
    while not runtime.gate.is_open:
        assert time.monotonic() < deadline, "the store gate did not open again"
        time.sleep(0.05)
    after = scrape(client.get("/metrics").text)
    assert value(after, "idledger_store_up") == 1
    assert value(after, "idledger_projection_lag_events", read_model="profiles") == 0


def test_several_workers_add_up_in_one_scrape(postgres_env: dict[str, str], tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with serving(
        store_url(postgres_env),
        tmp_path / "server.log",
        workers=2,
        env={"TMPDIR": str(scratch), "IDLEDGER_LOG_FORMAT": "json"},
    ) as base:
        (counting_dir,) = scratch.glob("idledger-metrics-*")  # made by serve for the workers
        _, before = get_metrics(base)
        health = {"method": "GET", "route": "/health", "status": "200"}
        for _ in range(20):  # new connections: both workers take some
            assert httpx.get(f"{base}/health").status_code == 200
        # Whichever worker answers, it reports both workers' counts.
        for _ in range(6):
            _, after = get_metrics(base)
            moved = value(after, "idledger_http_requests_total", **health) - value(
                before, "idledger_http_requests_total", **health
            )
            assert moved == 20
            assert value(after, "idledger_projection_lag_events", read_model="profiles") >= 0
        assert len(list(counting_dir.glob("*.db"))) >= 2  # one file per worker at least
    assert not counting_dir.exists()  # removed when the server stopped
    # Each worker applied the JSON logging configuration, uvicorn's lines included.
    output = (tmp_path / "server.log").read_text().splitlines()
    logged = [json.loads(line) for line in output if line.startswith("{")]
    started = {line["message"] for line in logged if line["logger"] == "uvicorn.error"}
    assert len({m for m in started if m.startswith("Started server process")}) == 2


def test_metrics_can_be_left_out(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDLEDGER_METRICS", "0")
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/health").headers["x-request-id"]
