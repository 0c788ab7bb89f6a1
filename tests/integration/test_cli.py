"""The `idledger` command, run as a real process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def idledger(*args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("idledger")
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=60, check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_version_prints_the_package_version() -> None:
    result = idledger("version")

    assert result.returncode == 0
    assert re.fullmatch(r"idledger \d+\.\d+\.\d+\n", result.stdout)


def test_demo_prints_the_documented_login_scenario(tmp_path: Path) -> None:
    result = idledger("demo", "--store-url", f"sqlite:///{tmp_path}/demo.db")

    assert result.returncode == 0, result.stderr
    osid1 = re.search(r"anonymous OSID1 ([0-9a-f-]{36})", result.stdout)
    assert osid1 is not None
    assert f"iOS push moves to {osid1[1]} (OSID1 wins)" in result.stdout
    assert f"OSID2 retired into {osid1[1]}" in result.stdout
    assert f"{osid1[1]}\tEIDA\tChromePush\tlive\n" in result.stdout  # piped: whole values
    assert (tmp_path / "demo.db").exists()
