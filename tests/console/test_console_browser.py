"""The console in a real Chromium against a real `idledger serve`, one server per
store kind: sign in, find, read a user's history and its past, an ownership
timeline moved by a login, and MAU equal to the API's. A failing test leaves
`failure.png` in its tmp_path; IDLEDGER_SCREENSHOTS=docs writes the README's
screenshots (docs/console-*.png) from the SQLite run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY
from tests.browser import browser_missing, chromium
from tests.conftest import fresh_store, store_url
from tests.console.conftest import FAILED
from tests.serving import serving

if TYPE_CHECKING or not browser_missing():  # else conftest leaves these tests out
    from playwright.sync_api import Browser, BrowserContext, Page, expect

SCREENSHOTS = os.environ.get("IDLEDGER_SCREENSHOTS")
LAPTOP = {"width": 1100, "height": 760}
PHONE = {"width": 375, "height": 740}


@dataclass(frozen=True)
class Ledger:
    """What the server holds, as the API answered it."""

    kind: str
    base: str
    app_id: str
    api_key: str
    alice: str
    bob: str
    moved: str  # a push subscription moved from an anonymous user to bob by a login
    tag_changed_at: datetime  # alice's plan went from gold to platinum
    other_app_user: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """One server per store kind for the whole module (the PostgreSQL one only
    with IDLEDGER_TEST_POSTGRES, like the rest of the suite)."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def ledger(store_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    log = tmp_path_factory.mktemp(f"console-{store_kind}") / "serve.log"
    with fresh_store(store_kind) as env, serving(store_url(env), log) as base:
        yield _seed(store_kind, base)


def _seed(kind: str, base: str) -> Ledger:
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Key {ADMIN_KEY}"})
    app = admin.post("/apps", json={"name": "Demo shop"}).json()
    other = admin.post("/apps", json={"name": "Another app"}).json()
    api = _client(base, app)
    alice = api.post("/users", json={
        "identity": {"external_id": "alice"}, "properties": {"tags": {"plan": "gold"}},
        "subscriptions": [{"type": "iOSPush", "token": "apns-alice"}],
    }).json()["identity"]["onesignal_id"]  # fmt: skip
    _ok(api.patch("/users/by/external_id/alice/identity", json={"identity": {"crm": "C-1"}}))
    email = {"subscription": {"type": "Email", "token": "alice@example.org"}}
    _ok(api.post("/users/by/external_id/alice/subscriptions", json=email))
    device = api.post("/users", json={"subscriptions": [{"type": "AndroidPush",
                                                         "token": "fcm-bob"}]}).json()  # fmt: skip
    moved = device["subscriptions"][0]["id"]
    bob = api.post("/users", json={"identity": {"external_id": "bob"}}).json()
    _ok(api.patch(f"/subscriptions/{moved}/owner", json={"identity": {"external_id": "bob"}}))
    platinum = {"properties": {"tags": {"plan": "platinum"}}}
    _ok(api.patch("/users/by/external_id/alice", json=platinum))
    for who in ("alice", "bob"):
        _ok(api.patch(f"/users/by/external_id/{who}", json={"deltas": {"session_count": 1}}))
    events = api.get(f"/idledger/users/{alice}/events").json()["events"]
    (changed,) = [e for e in events if e["data"].get("assigned") == {"plan": "platinum"}]
    carol = _client(base, other).post("/users", json={"identity": {"external_id": "carol"}}).json()
    return Ledger(
        kind, base, app["id"], app["basic_auth_key"], alice, bob["identity"]["onesignal_id"],
        moved, datetime.fromisoformat(changed["timestamp"]), carol["identity"]["onesignal_id"],
    )  # fmt: skip


def _client(base: str, app: dict[str, Any]) -> httpx.Client:
    """The app's API, with its key: paths are relative to /apps/{app_id}."""
    return httpx.Client(
        base_url=f"{base}/apps/{app['id']}",
        headers={"Authorization": f"Key {app['basic_auth_key']}"},
    )


def _ok(response: httpx.Response) -> None:
    assert response.is_success, response.text


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Module scope: Playwright's sync API runs an event loop while it is open,
    # which would break any later test that calls asyncio.run().
    with chromium() as launched:
        yield launched


@pytest.fixture
def browser_context(
    browser: Browser, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    yield context
    if request.node.stash.get(FAILED, False):
        for number, open_page in enumerate(context.pages):
            open_page.screenshot(path=str(tmp_path / f"failure-{number}.png"), full_page=True)
    context.close()


@pytest.fixture
def page(browser_context: BrowserContext) -> Page:
    return browser_context.new_page()


def sign_in(page: Page, ledger: Ledger, app_id: str, key: str) -> None:
    page.goto(f"{ledger.base}/console/sign-in")
    page.get_by_label("App id").fill(app_id)
    page.get_by_label("REST API key or organization key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def document(page: Page, ledger: Ledger, name: str, height: int = LAPTOP["height"]) -> None:
    """A README screenshot, when asked for (IDLEDGER_SCREENSHOTS=docs), from SQLite:
    the top ``height`` pixels of the page."""
    if SCREENSHOTS and ledger.kind == "sqlite":
        page.screenshot(
            path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=True,
            clip={"x": 0, "y": 0, "width": LAPTOP["width"], "height": height},
        )  # fmt: skip


def test_sign_in_find_a_user_read_its_history_and_its_past(page: Page, ledger: Ledger) -> None:
    page.goto(f"{ledger.base}/console/sign-in")
    document(page, ledger, "sign-in", height=460)
    sign_in(page, ledger, ledger.app_id, ledger.api_key)
    expect(page.get_by_role("heading", name="Find")).to_be_visible()
    document(page, ledger, "find", height=330)

    for _ in range(12):  # keyboard only: tab to the search box, type, press Enter
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "q":
            break
    page.keyboard.type("alice")
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name=f"User {ledger.alice}")).to_be_visible()
    now = page.locator("section[aria-labelledby=now-title]")
    expect(now.locator("tr[data-tag=plan] td")).to_have_text("platinum")
    versions = [int(v) for v in page.locator("table.events tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.version)")]  # fmt: skip
    assert versions == sorted(versions, reverse=True)
    assert len(versions) >= 6
    expect(page.locator("table.events")).to_contain_text("TagsChanged")

    before_change = ledger.tag_changed_at - timedelta(milliseconds=1)
    page.get_by_label("As of (UTC)").fill(before_change.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.") + f"{before_change.microsecond // 1000:03d}")  # fmt: skip
    page.get_by_role("button", name="Show").click()

    as_of = page.get_by_test_id("as-of")
    expect(as_of.locator("tr[data-tag=plan] td")).to_have_text("gold")
    document(page, ledger, "user", height=1240)  # down to the user as of the instant
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_subscription_moved_by_a_login_shows_two_owners(page: Page, ledger: Ledger) -> None:
    sign_in(page, ledger, ledger.app_id, ledger.api_key)
    page.get_by_label("Find a user or subscription").fill("fcm-bob")  # by its token
    page.get_by_role("button", name="Find").click()

    expect(page.get_by_role("heading", name=f"Subscription {ledger.moved}")).to_be_visible()
    bar = page.locator("svg.bar")
    expect(bar.locator("g.interval")).to_have_count(2)
    expect(bar.locator("g.boundary")).to_have_count(1)
    expect(bar.locator("g.boundary text")).to_have_text("login")
    rows = page.locator("table.intervals tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td").nth(5)).to_have_text("login")
    expect(rows.nth(1).locator("td").nth(4)).to_have_text("login")
    expect(rows.nth(1).locator("td").nth(1)).to_have_text(ledger.bob)
    document(page, ledger, "subscription")

    rows.nth(1).get_by_role("link").click()  # to the new owner, who absorbed the device user
    expect(page.get_by_text("Merged with (retired into this user)")).to_be_visible()


def test_the_mau_page_draws_the_apis_numbers(page: Page, ledger: Ledger) -> None:
    today = datetime.now(UTC).date()
    first = today - timedelta(days=20)
    api = httpx.get(f"{ledger.base}/apps/{ledger.app_id}/idledger/mau",
                    params={"from": str(first), "to": str(today)},
                    headers={"Authorization": f"Key {ledger.api_key}"}).json()  # fmt: skip
    sign_in(page, ledger, ledger.app_id, ledger.api_key)
    page.get_by_role("link", name="Monthly active users").first.click()
    page.get_by_label("From", exact=True).fill(str(first))
    page.get_by_label("To", exact=True).fill(str(today))
    page.get_by_role("button", name="Show").click()

    expect(page.locator("svg.mau polyline")).to_have_count(3)  # total, iOSPush, AndroidPush
    rows = page.locator("table.mau-days tbody tr")
    expect(rows).to_have_count(21)
    shown = rows.evaluate_all("""rows => rows.map(row => ({
        day: row.dataset.day,
        counts: Object.fromEntries([...row.querySelectorAll('td')].map(
            cell => [cell.dataset.type, Number(cell.textContent)]))}))""")
    expected = [{"day": d["day"], "counts": {"total": d["total"], "AndroidPush": 0, "iOSPush": 0,
                                             **d["by_type"]}} for d in api["days"]]  # fmt: skip
    assert shown == expected
    assert shown[-1]["counts"] == {"total": 2, "AndroidPush": 1, "iOSPush": 1}
    expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
    document(page, ledger, "mau")


def test_a_wrong_key_is_refused_and_another_apps_user_is_not_found(
    page: Page, ledger: Ledger
) -> None:
    sign_in(page, ledger, ledger.app_id, "not-the-key")
    expect(page.get_by_role("alert")).to_have_text("That app id and key do not sign in.")

    sign_in(page, ledger, ledger.app_id, ledger.api_key)
    page.goto(f"{ledger.base}/console/apps/{ledger.app_id}/users/{ledger.other_app_user}")
    theirs = page.locator("main").inner_text()
    page.goto(
        f"{ledger.base}/console/apps/{ledger.app_id}/users/00000000-0000-0000-0000-00000000000b"
    )
    unknown = page.locator("main").inner_text()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{ledger.base}/console/apps/{ledger.app_id}")

    assert "Nothing of this app has that id." in theirs
    assert theirs == unknown
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # signed out for good
