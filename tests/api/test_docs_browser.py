"""/docs and /redoc in a real Chromium against a real `idledger serve`, with every
request that does not go to that server blocked (as on a machine without the
internet): each page draws its operations (Swagger UI its Authorize button), and
no request fails or is refused. Left out, said once, without a browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser import BROWSER_SKIP_REASON, browser_missing, chromium
from tests.conftest import fresh_store, store_url
from tests.serving import serving

if TYPE_CHECKING or not browser_missing():
    from playwright.sync_api import Browser, Page, Request, Route, expect

pytestmark = pytest.mark.skipif(browser_missing(), reason=BROWSER_SKIP_REASON)

# What each page shows once it has drawn the API: a selector and how many at least.
DRAWN = {
    "/docs": [(".swagger-ui button.authorize", 1), (".swagger-ui .opblock", 10)],
    "/redoc": [("[data-section-id^='operation/']", 10), ("h1", 1)],
}
# Redoc's "API docs by Redocly" footer asks its CDN for a logo; the page's own
# Content-Security-Policy refuses it inside the browser (api/openapi_docs.py says so)
# and Redoc then hides the image. That refusal, and only it, is expected.
REFUSED_BY_DESIGN = {"https://cdn.redoc.ly/redoc/logo-mini.svg: csp"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("docs") / "serve.log"
    with fresh_store("sqlite") as env, serving(store_url(env), log) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.mark.parametrize("path", DRAWN)
def test_the_docs_page_draws_the_api_offline(
    browser: Browser, base: str, path: str, tmp_path: Path
) -> None:
    context = browser.new_context()
    blocked: list[str] = []
    failed: list[str] = []
    refused: list[str] = []

    def only_this_server(route: Route) -> None:
        if route.request.url.startswith(f"{base}/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("blockedbyclient")

    context.route("**/*", only_this_server)
    page: Page = context.new_page()
    page.on("requestfailed", lambda request: failed.append(_said(request)))
    page.on(
        "response",
        lambda response: (
            refused.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    try:
        page.goto(f"{base}{path}")
        for selector, at_least in DRAWN[path]:
            expect(page.locator(selector).nth(at_least - 1)).to_be_attached(timeout=20_000)
        page.wait_for_load_state("networkidle")
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        raise
    finally:
        context.close()

    assert blocked == []  # nothing wanted from elsewhere (a CDN, fonts)
    assert set(failed) - REFUSED_BY_DESIGN == set(), failed
    assert refused == []


def _said(request: Request) -> str:
    return f"{request.url}: {request.failure}"
