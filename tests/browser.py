"""Where the browser tests find their browser: Debian's Chromium, driven by
Playwright for Python (never `playwright install`: nothing is downloaded). Shared
by the console's tests (tests/console) and the API docs' (tests/api)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path(os.environ.get("IDLEDGER_TEST_CHROMIUM", "/usr/bin/chromium"))
BROWSER_SKIP_REASON = (
    f"Browser tests skipped: they need Chromium at {CHROMIUM} (apt-get install -y chromium) "
    "and Playwright (pip install -e '.[dev]'); .ci/run installs both"
)


def browser_missing() -> bool:
    return not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, closed afterwards."""
    from playwright.sync_api import sync_playwright  # only where it is installed

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()
