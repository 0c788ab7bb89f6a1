"""Where the browser tests find their browser: Debian's Chromium, driven by
Playwright for Python (never `playwright install`: nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("IDLEDGER_TEST_CHROMIUM", "/usr/bin/chromium"))
BROWSER_SKIP_REASON = (
    f"Browser tests skipped: they need Chromium at {CHROMIUM} (apt-get install -y chromium) "
    "and Playwright (pip install -e '.[dev]'); .ci/run installs both"
)


def browser_missing() -> bool:
    return not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None
