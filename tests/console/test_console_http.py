"""The console over HTTP, on each store: the session cookie (signed, HttpOnly,
SameSite, expiring, tied to the key), CSRF safety (only GET pages, and the two
POSTs checked for this site's Origin), escaping, and the search box's rules."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi.testclient import TestClient

from idledger.api.console.session import COOKIE_NAME, Session, fingerprint, seal
from idledger.api.console.settings import ConsoleSettings, signing_key
from idledger.api.main import create_app
from idledger.settings import Settings
from tests.api.conftest import ADMIN_KEY, Tenant, new_tenant
from tests.console.conftest import ORIGIN, sign_in


def _person(tenant: Tenant, external_id: str, tag: str = "gold") -> dict[str, Any]:
    created = tenant.post("/users", {
        "identity": {"external_id": external_id, "crm": f"crm-{external_id}"},
        "properties": {"tags": {"plan": tag}},
        "subscriptions": [{"type": "iOSPush", "token": f"apns-{external_id}"},
                          {"type": "Email", "token": f"{external_id}@example.org"}],
    })  # fmt: skip
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def _cookie_key() -> bytes:
    return signing_key(ConsoleSettings(), ADMIN_KEY)


def test_sign_in_sets_a_signed_httponly_samesite_cookie_and_sign_out_clears_it(
    client: TestClient, tenant: Tenant
) -> None:
    signed_in = sign_in(client, tenant.app_id, tenant.api_key)
    cookie_header = signed_in.headers["set-cookie"]
    page = client.get(f"/console/apps/{tenant.app_id}")

    signed_out = client.post("/console/sign-out", headers={"Origin": ORIGIN},
                             follow_redirects=False)  # fmt: skip
    after = client.get(f"/console/apps/{tenant.app_id}", follow_redirects=False)

    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/console")
    assert "HttpOnly" in cookie_header
    assert "SameSite=lax" in cookie_header
    assert "Path=/console" in cookie_header
    assert f"Max-Age={ConsoleSettings().session_seconds}" in cookie_header
    assert tenant.api_key not in cookie_header  # a fingerprint, never the key
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert signed_out.status_code == 303
    assert 'idledger_console=""' in signed_out.headers["set-cookie"]
    assert after.status_code == 303
    assert after.headers["location"].startswith("/console/sign-in?next=")


def test_a_tampered_expired_foreign_or_outdated_cookie_is_refused(
    client: TestClient, tenant: Tenant
) -> None:
    app_page = f"/console/apps/{tenant.app_id}"
    app = client.app.state.runtime.app(UUID(tenant.app_id))  # type: ignore[attr-defined]
    key = _cookie_key()
    now = int(time.time())

    def opens(cookie: str) -> bool:
        client.cookies.clear()
        response = client.get(
            app_page, headers={"Cookie": f"{COOKIE_NAME}={cookie}"}, follow_redirects=False
        )
        assert response.status_code in (200, 303), response.text
        return bool(response.status_code == 200)

    valid = seal(key, Session(app.id, fingerprint(key, app.api_key_hash), now + 60), now)
    version, body, mac = valid.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    expired = seal(key, Session(app.id, fingerprint(key, app.api_key_hash), now - 1), now - 61)
    foreign = seal(b"k" * 32, Session(app.id, fingerprint(b"k" * 32, app.api_key_hash), now + 60),
                   now)  # fmt: skip

    assert opens(valid)  # the forgery below differ from a cookie that works in one way each
    assert not opens(f"{version}.{flipped}.{mac}")
    assert not opens(expired)
    assert not opens(foreign)
    assert not opens("garbage")
    rotated = client.post(f"/apps/{tenant.app_id}/api_key",
                          headers={"Authorization": f"Key {ADMIN_KEY}"})  # fmt: skip
    assert rotated.status_code == 200
    assert not opens(valid)  # the key changed: its sessions end


def test_a_wrong_key_is_refused_and_one_apps_key_cannot_open_another_apps_pages(
    client: TestClient, tenant: Tenant
) -> None:
    other = new_tenant(client, "other")
    theirs = _person(other, "their-user")["identity"]["onesignal_id"]
    wrong = sign_in(client, tenant.app_id, "not-the-key")
    wrong_app = sign_in(client, other.app_id, tenant.api_key)

    sign_in(client, tenant.app_id, tenant.api_key)
    their_user = client.get(f"/console/apps/{tenant.app_id}/users/{theirs}")
    unknown_user = client.get(f"/console/apps/{tenant.app_id}/users/{UUID(int=7)}")
    their_app = client.get(f"/console/apps/{other.app_id}/users/{theirs}")
    their_search = client.get(f"/console/apps/{tenant.app_id}/find", params={"q": "their-user"})

    assert wrong.status_code == wrong_app.status_code == 401
    assert COOKIE_NAME not in wrong.headers.get("set-cookie", "")
    assert "do not sign in" in wrong.text
    assert their_user.status_code == unknown_user.status_code == their_app.status_code == 404
    assert their_user.text == unknown_user.text == their_app.text
    assert their_search.status_code == 404


def test_the_console_only_reads_and_its_posts_need_this_sites_origin(
    client: TestClient, tenant: Tenant
) -> None:
    methods = {
        (route.path, method)
        for route in client.app.routes  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/console") and hasattr(route, "methods")
        for method in route.methods
    }
    cross_site = sign_in(client, tenant.app_id, tenant.api_key, Origin="https://evil.example")
    no_origin = client.post("/console/sign-in", data={"app_id": tenant.app_id,
                            "api_key": tenant.api_key}, follow_redirects=False)  # fmt: skip
    sign_in(client, tenant.app_id, tenant.api_key)
    forced_out = client.post("/console/sign-out", headers={"Origin": "https://evil.example"})
    still_in = client.get(f"/console/apps/{tenant.app_id}", follow_redirects=False)

    assert {m for path, m in methods if path.startswith("/console/sign-")} <= {"GET", "POST"}
    assert browsing_changes_nothing(client, tenant)
    assert {m for path, m in methods if not path.startswith("/console/sign-")} <= {"GET", "HEAD"}
    assert cross_site.status_code == no_origin.status_code == forced_out.status_code == 403
    assert "set-cookie" not in cross_site.headers
    assert still_in.status_code == 200


def test_every_value_is_escaped(client: TestClient, tenant: Tenant) -> None:
    hostile = "<script>alert(1)</script>"
    created = tenant.post("/users", {
        "identity": {"external_id": '"><img src=x onerror=alert(2)>'},
        "properties": {"tags": {"<b>key</b>": hostile}},
    })  # fmt: skip
    user_id = created.json()["identity"]["onesignal_id"]
    sign_in(client, tenant.app_id, tenant.api_key)

    page = client.get(f"/console/apps/{tenant.app_id}/users/{user_id}")
    search = client.get(f"/console/apps/{tenant.app_id}/find", params={"q": hostile})

    assert page.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;key&lt;/b&gt;" in page.text
    assert "<script" not in page.text
    assert "<img" not in page.text
    assert "<b>" not in page.text
    assert search.status_code == 404
    assert "<script" not in search.text
    assert "&lt;script&gt;" in search.text


def test_the_search_box_follows_the_apis_lookups(client: TestClient, tenant: Tenant) -> None:
    alice = _person(tenant, "alice")
    user_id = alice["identity"]["onesignal_id"]
    kinds = {s["type"]: s["id"] for s in alice["subscriptions"]}
    push, mail = kinds["iOSPush"], kinds["Email"]
    sign_in(client, tenant.app_id, tenant.api_key)
    base = f"/console/apps/{tenant.app_id}"

    def found(query: str) -> str:
        response = client.get(f"{base}/find", params={"q": query}, follow_redirects=False)
        assert response.status_code in (303, 404), response.text
        return str(response.headers.get("location", "nothing"))

    assert found(user_id) == found("alice") == found("crm:crm-alice") == f"{base}/users/{user_id}"
    assert found("external_id:alice") == f"{base}/users/{user_id}"
    assert found(push) == found("apns-alice") == f"{base}/subscriptions/{push}"
    assert found("alice@example.org") == f"{base}/subscriptions/{mail}"
    assert found("bob") == found("crm:alice") == found(str(UUID(int=3))) == "nothing"
    assert client.get(f"{base}/find", params={"q": "a\x00b"}).status_code == 400


def test_the_organization_key_lists_the_apps_and_opens_each(
    client: TestClient, tenant: Tenant
) -> None:
    other = new_tenant(client, "Second app")
    signed_in = sign_in(client, "", ADMIN_KEY)
    landing = client.get("/console")
    second = client.get(f"/console/apps/{other.app_id}")

    assert signed_in.status_code == 303
    assert landing.url.path == "/console/apps"
    assert "tenant" in landing.text
    assert f"/console/apps/{tenant.app_id}" in landing.text
    assert "Second app" in landing.text
    assert f"/console/apps/{other.app_id}" in landing.text
    assert second.status_code == 200
    assert "Second app" in second.text


def test_an_erased_user_shows_what_the_api_shows(client: TestClient, tenant: Tenant) -> None:
    alice = _person(tenant, "erase-me-77", tag="Lyon-secret")
    user_id = alice["identity"]["onesignal_id"]
    push = alice["subscriptions"][0]["id"]
    assert tenant.delete("/users/by/external_id/erase-me-77?erase=true").status_code == 200
    sign_in(client, tenant.app_id, tenant.api_key)

    user_page = client.get(f"/console/apps/{tenant.app_id}/users/{user_id}")
    subscription_page = client.get(f"/console/apps/{tenant.app_id}/subscriptions/{push}")

    assert user_page.status_code == subscription_page.status_code == 200
    assert "deleted" in user_page.text
    assert "Erased" in user_page.text
    for value in ("erase-me-77", "Lyon-secret", "apns-erase-me-77", "example.org"):
        assert value not in user_page.text
        assert value not in subscription_page.text


def test_the_mau_csv_has_the_apis_numbers(client: TestClient, tenant: Tenant) -> None:
    _person(tenant, "active")
    assert tenant.patch("/users/by/external_id/active",
                        {"deltas": {"session_count": 1}}).status_code == 202  # fmt: skip
    today = datetime.now(UTC).date()
    first = (today - timedelta(days=40)).isoformat()  # whatever today is
    api = tenant.get("/idledger/mau", params={"from": first, "to": today.isoformat()}).json()
    sign_in(client, tenant.app_id, tenant.api_key)

    csv = client.get(f"/console/apps/{tenant.app_id}/mau.csv",
                     params={"from": first, "to": today.isoformat()})  # fmt: skip
    backwards = client.get(f"/console/apps/{tenant.app_id}/mau",
                           params={"from": today.isoformat(), "to": first})  # fmt: skip

    header, *rows = csv.text.splitlines()
    assert header == "day,total,iOSPush"
    assert rows == [f"{d['day']},{d['total']},{d['by_type'].get('iOSPush', 0)}"
                    for d in api["days"]]  # fmt: skip
    assert len(rows) == 41
    assert rows[-1] == f"{today},1,1"
    assert csv.headers["content-disposition"].startswith("attachment;")
    assert backwards.status_code == 400
    assert "range" in backwards.text


def test_without_a_signing_key_the_console_says_so(settings: Settings) -> None:
    closed = settings.model_copy(update={"admin_key": None})
    with TestClient(create_app(closed)) as client:
        response = client.get("/console/sign-in")

    assert response.status_code == 503
    assert "IDLEDGER_CONSOLE_SECRET" in response.text


def test_signing_in_returns_to_the_page_asked_for_and_nowhere_else(
    client: TestClient, tenant: Tenant
) -> None:
    wanted = f"/console/apps/{tenant.app_id}/mau?from=2026-01-01&to=2026-01-31"
    asked = client.get(wanted, follow_redirects=False)

    def lands(target: str) -> str:
        client.cookies.clear()
        response = client.post(
            "/console/sign-in",
            data={"app_id": tenant.app_id, "api_key": tenant.api_key, "next": target},
            headers={"Origin": ORIGIN},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return str(response.headers["location"])

    assert asked.status_code == 303
    assert asked.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Fapps%2F")
    assert lands(wanted) == wanted
    for elsewhere in ("https://evil.example/", "//evil.example/console", "/console//evil.example",
                      "/console/\\evil.example", "/elsewhere"):  # fmt: skip
        assert lands(elsewhere) == "/console"


def _positions(client: TestClient) -> tuple[int, dict[str, int]]:
    """The log head and each read model's position, once the read models have caught up."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while any(lag.events for lag in runtime.models.lag().values()):
        assert time.monotonic() < deadline, "the read models did not catch up"
        time.sleep(0.05)
    followers = runtime.models.followers
    head = runtime.ledger.recorder.max_notification_id() or 0
    return head, {name: follower.view.position() for name, follower in followers.items()}


def browsing_changes_nothing(client: TestClient, tenant: Tenant) -> bool:
    """Every console page, each way it can be asked for, leaves the log head and the
    read models' positions as they were."""
    alice = _person(tenant, "browse-alice")
    user_id, push = alice["identity"]["onesignal_id"], alice["subscriptions"][0]["id"]
    base = f"/console/apps/{tenant.app_id}"
    before = _positions(client)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # no zone: UTC
    pages = ["/console", "/console/sign-in", base, f"{base}/find?q=browse-alice",
             f"{base}/find?q=apns-browse-alice", f"{base}/users/{user_id}",
             f"{base}/users/{user_id}?at={at}", f"{base}/users/{user_id}?before=1",
             f"{base}/subscriptions/{push}", f"{base}/subscriptions/{push}?at={at}",
             f"{base}/mau", f"{base}/mau.csv", f"{base}/users/{UUID(int=5)}"]  # fmt: skip
    for path in pages:
        assert client.get(path).status_code in (200, 404), path
    sign_in(client, "", ADMIN_KEY)
    assert client.get("/console/apps").status_code == 200
    sign_in(client, tenant.app_id, tenant.api_key)
    return _positions(client) == before
