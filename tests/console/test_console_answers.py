"""What the console and the API answer at the edges, on each store: instants and
versions out of range are a 400 (never a 500), anything unforeseen is a 500 in
the API's error shape (an HTML page under /console) whose message is not logged,
an unknown console path is an HTML 404, the events table separates who acted
from why, and requests are named by their route template, static files too."""

from __future__ import annotations

import logging
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from idledger.api.console.rendering import ConsoleRoute, as_console_error
from idledger.api.log_setup import JsonFormatter
from idledger.api.main import create_app
from idledger.domain.errors import AliasConflict
from idledger.settings import Settings
from tests.api.conftest import ADMIN_KEY, Tenant
from tests.console.conftest import sign_in

SECRET_IN_MESSAGE = "alice@example.org"


def test_out_of_range_instants_and_versions_are_refused_not_failed(
    client: TestClient, tenant: Tenant
) -> None:
    subscription = {"type": "iOSPush", "token": "t-edge"}
    created = tenant.post("/users", {"identity": {"external_id": "edge"},
                                     "subscriptions": [subscription]})  # fmt: skip
    user_id = created.json()["identity"]["onesignal_id"]
    push = created.json()["subscriptions"][0]["id"]
    sign_in(client, tenant.app_id, tenant.api_key)
    base = f"/console/apps/{tenant.app_id}"

    for at in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"):
        for page in (f"{base}/users/{user_id}", f"{base}/subscriptions/{push}"):
            answer = client.get(page, params={"at": at})
            assert answer.status_code == 400, (page, at, answer.text)
            assert "at: give an instant" in answer.text
    too_far = client.get(f"{base}/users/{user_id}", params={"before": "9" * 23})
    api_too_far = tenant.get(f"/idledger/users/{user_id}/events", params={"after": 2**63})
    api_largest = tenant.get(f"/idledger/users/{user_id}/events", params={"after": 2**63 - 1})

    assert too_far.status_code == 400
    assert too_far.headers["content-type"].startswith("text/html")
    assert api_too_far.status_code == 400
    assert api_too_far.json()["errors"][0]["field"] == "query.after"
    assert (api_largest.status_code, api_largest.json()["events"]) == (200, [])


def _boom() -> None:
    raise RuntimeError(f"could not handle {SECRET_IN_MESSAGE}")


@pytest.fixture
def failing_app(tmp_path: Path) -> FastAPI:
    """The real app, with three routes that fail in a way nothing foresees: one of
    the API, one page of the console, one under /console outside its pages."""
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/ledger.db", admin_key=ADMIN_KEY))
    app.add_api_route("/apps/{app_id}/failing", _boom)
    app.router.routes.append(ConsoleRoute("/console/failing-page", _boom))
    app.add_api_route("/console/failing-elsewhere", _boom)
    return app


def test_an_unforeseen_error_is_a_500_in_the_usual_shape_and_its_message_is_not_logged(
    failing_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(failing_app, raise_server_exceptions=False) as http:
        api = http.get(f"/apps/{'0' * 8}/failing")
        with caplog.at_level(logging.ERROR, logger="idledger"):
            console_page = http.get("/console/failing-page")
        elsewhere = http.get("/console/failing-elsewhere")

    assert api.status_code == 500
    assert api.json()["errors"][0]["code"] == "internal-error"
    for page in (console_page, elsewhere):
        assert page.status_code == 500
        assert page.headers["content-type"].startswith("text/html")
        assert "<h1>" in page.text
        assert SECRET_IN_MESSAGE not in page.text
    assert SECRET_IN_MESSAGE not in api.text
    logged = [record for record in caplog.records if record.exc_info]
    assert logged, "the console's failure is logged"
    written = "\n".join(JsonFormatter().format(record) for record in logged)
    assert "RuntimeError" in written
    assert SECRET_IN_MESSAGE not in written


def test_the_console_answers_the_apis_statuses(client: TestClient, tenant: Tenant) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    conflict = as_console_error(None, AliasConflict({"crm": "42"}))  # type: ignore[arg-type]
    store_down = as_console_error(None, runtime.gate.refusal())  # type: ignore[arg-type]
    sign_in(client, tenant.app_id, tenant.api_key)
    unknown = client.get("/console/no-such-page")
    wrong_method = client.get("/console/sign-out")
    api_unknown = client.get("/no-such-endpoint")

    assert conflict.status == 409  # as the API answers a conflict
    assert (store_down.status, store_down.headers) == (503, {"Retry-After": "1"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("text/html")
    assert "Back to the console" in unknown.text
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("text/html")
    assert api_unknown.status_code == 404
    assert api_unknown.json()["errors"][0]["code"] == "http-error"


def test_a_non_ascii_organization_key_is_refused_not_failed(client: TestClient) -> None:
    refused = client.post("/apps", json={"name": "x"}, headers={"Authorization": b"Key \xe9t\xe9"})
    signed_in = client.post(
        "/console/sign-in", content="app_id=&api_key=%C3%A9t%C3%A9",
        headers={"Origin": "http://testserver",
                 "Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )  # fmt: skip

    assert refused.status_code == 401
    assert signed_in.status_code == 401


def _cells(page: str, version: int) -> list[str]:
    row = re.search(rf'<tr data-version="{version}">(.*?)</tr>', page, re.S)
    assert row is not None, page
    return re.findall(r"<td>(.*?)</td>", row.group(1), re.S)


def test_the_events_table_shows_actor_and_cause_apart_and_no_empty_entries(
    client: TestClient, tenant: Tenant
) -> None:
    anonymous = tenant.post("/users", {"subscriptions": [{"type": "iOSPush", "token": "t-anon"}]})
    user_id = anonymous.json()["identity"]["onesignal_id"]
    identified = tenant.patch(f"/users/by/onesignal_id/{user_id}/identity",
                              {"identity": {"external_id": "now-known"}})  # fmt: skip
    assert identified.status_code == 200, identified.text
    sign_in(client, tenant.app_id, tenant.api_key)

    page = client.get(f"/console/apps/{tenant.app_id}/users/{user_id}").text
    header = re.search(r'<table class="events">\s*<thead>(.*?)</thead>', page, re.S)
    events = re.findall(r'<tr data-version="(\d+)">\s*<td>\d+</td>\s*<td>.*?</td>\s*<td>(\w+)</td>',
                        page, re.S)  # fmt: skip
    versions = {kind: int(number) for number, kind in events}
    set_id = _cells(page, versions["ExternalIdSet"])

    assert header is not None
    assert re.findall(r"<th[^>]*>(.*?)</th>", header.group(1)) == [
        "#", "Time", "Event", "Actor", "Cause", "What changed"]  # fmt: skip
    actor, cause, changes = set_id[3], set_id[4], set_id[5]
    assert actor.strip()  # who asked
    assert cause == ""  # the event says no cause: the column is empty, not the actor again
    assert "<dt>external_id</dt><dd>now-known</dd>" in changes
    assert "replaced" not in changes  # there was none


def test_static_files_are_named_by_their_mount_and_polls_log_at_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IDLEDGER_ACCESS_LOG", "1")
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/ledger.db", admin_key=ADMIN_KEY))
    with TestClient(app) as http, caplog.at_level(logging.DEBUG, logger="idledger.access"):
        assert http.get("/console/static/console.css").status_code == 200
        assert http.get("/docs/assets/no-such-file.js").status_code == 404
        assert http.get("/health").status_code == 200
        scrape = http.get("/metrics").text
        assert http.get("/console/sign-in").status_code == 200
        documented = http.get("/openapi.json").json()["info"]["version"]

    lines = {record.getMessage().split(" ")[1]: record.levelname for record in caplog.records
             if record.name == "idledger.access"}  # fmt: skip
    assert lines["/console/static/{path}"] == "INFO"
    assert lines["/docs/assets/{path}"] == "INFO"
    assert lines["/health"] == lines["/metrics"] == "DEBUG"
    assert lines["/console/sign-in"] == "INFO"
    assert 'route="/console/static/{path}"' in scrape
    assert documented == version("idledger")
