"""`idledger serve` checks every setting (the API's, the console's, the on/off
switches) before it says anything or makes a store: a bad one is one line naming
its variable, and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BAD_SETTINGS = [
    ("IDLEDGER_CONSOLE_SESSION_SECONDS", "abc"),
    ("IDLEDGER_CONSOLE_SECRET", "too-short"),
    ("IDLEDGER_METRICS", "maybe"),
    ("IDLEDGER_ACCESS_LOG", "loud"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS)
def test_serve_refuses_a_bad_setting_before_anything_else(
    tmp_path: Path, variable: str, value: str
) -> None:
    store = tmp_path / "store" / "ledger.db"
    environment = {key: item for key, item in os.environ.items() if not key.startswith("IDLEDGER_")}
    environment[variable] = value
    result = subprocess.run(
        [str(Path(sys.executable).with_name("idledger")), "serve", "--port", "9",
         "--store-url", f"sqlite:///{store}"],
        capture_output=True, text=True, timeout=60, check=False, env=environment,
    )  # fmt: skip

    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("idledger serve: ")
    assert f" {variable}" in lines[0]  # the variable as the operator sets it, prefix and all
    assert result.stdout == ""  # no "idledger on http://...", no organization key, no "new store"
    assert not store.parent.exists()
