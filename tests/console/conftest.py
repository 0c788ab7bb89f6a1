"""Console tests: the HTTP half reuses the API tests' app and tenants (each store);
the browser half drives Debian's Chromium through Playwright against a real
`idledger serve`, and is left out, said once, when no browser is installed."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import client, settings, tenant  # noqa: F401  (fixtures)
from tests.browser import BROWSER_SKIP_REASON, browser_missing
from tests.conftest import distributed

ORIGIN = "http://testserver"  # what the TestClient's requests are addressed to


def sign_in(http: TestClient, app_id: str, api_key: str, **headers: str) -> Any:
    """POST the sign-in form as the console's own page does (its Origin)."""
    return http.post(
        "/console/sign-in",
        data={"app_id": app_id, "api_key": api_key},
        headers={"Origin": ORIGIN, **headers},
        follow_redirects=False,
    )


def _needs_browser(item: pytest.Item) -> bool:
    return "browser_context" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after the PostgreSQL half is left out (tests/conftest.py)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without Chromium or Playwright the browser tests are left out, said once."""
    if not browser_missing():
        return
    left_out = [item for item in items if _needs_browser(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not _needs_browser(item)]
        config.stash[_LEFT_OUT] = len(left_out)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    left_out = terminalreporter.config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(f"{BROWSER_SKIP_REASON} ({left_out} tests)", yellow=True)
    elif browser_missing() and distributed(terminalreporter.config):
        terminalreporter.write_line(BROWSER_SKIP_REASON, yellow=True)


_LEFT_OUT = pytest.StashKey[int]()


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Note a failed test body, so its browser fixture can take a screenshot."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.stash[FAILED] = True
