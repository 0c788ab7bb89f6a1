"""A real `idledger serve` process on a free port, for tests that drive it over TCP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(
    url: str,
    log_path: Path,
    *,
    workers: int = 1,
    access_log: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """The server's base URL once it is ready; stopped on exit. With several
    workers, /ready must answer several times in a row (each worker, as far as
    can be told)."""
    port = free_port()
    environment = {
        **os.environ,
        "IDLEDGER_ADMIN_KEY": ADMIN_KEY,
        "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
        "IDLEDGER_STORE_URL": url,
        **(env or {}),
    }
    command = [
        str(Path(sys.executable).with_name("idledger")), "serve", "--port", str(port),
        "--workers", str(workers), "--access-log" if access_log else "--no-access-log",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            ready = 0
            while ready < 3 * workers:
                try:
                    ready = ready + 1 if httpx.get(f"{base}/ready", timeout=1).is_success else 0
                except httpx.TransportError:
                    ready = 0
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.05)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)
