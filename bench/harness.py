"""What every benchmark shares: fresh stores, timing, and report rows."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from idledger.domain.ledger import Ledger
from idledger.settings import store_env

POSTGRES_URL = os.environ.get(
    "IDLEDGER_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
INDEX_KEY = bytes(range(32))
# Every store the harness makes (and every server it starts) seals personal values
# under data keys wrapped by this master key; PostgreSQL stores require one.
os.environ.setdefault("IDLEDGER_MASTER_KEY", bytes(range(32, 64)).hex())


@dataclass(frozen=True)
class Row:
    """One line of BENCHMARKS.md."""

    section: str
    store: str
    what: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""


@contextmanager
def fresh_store(kind: str) -> Iterator[tuple[dict[str, str], str]]:
    """(library environment, store URL) of a new, empty store."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="idledger-bench-") as scratch:
            url = f"sqlite:///{Path(scratch) / 'ledger.db'}"
            yield store_env(url), url
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{POSTGRES_URL}?schema={schema}"
    try:
        yield store_env(url), url
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def ledger_for(env: dict[str, str]) -> Ledger:
    return Ledger(env, index_key=INDEX_KEY)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_time(action: Callable[[], object], repeats: int) -> float:
    return statistics.median(timed(action) for _ in range(repeats))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    postgres = subprocess.run(
        ["psql", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"SQLite {__import__('sqlite3').sqlite_version}, {postgres or 'PostgreSQL'}; "
        f"{datetime.now(UTC).date().isoformat()}"
    )


ADMIN = "bench"  # the organization key of the servers the benchmarks start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server(url: str, workers: int, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``idledger serve`` as README starts it (without the access log), in its own
    process, with ``env`` added to this process's environment; its URL and pid."""
    port = free_port()
    environment = {**os.environ, "IDLEDGER_STORE_URL": url, "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
                   "IDLEDGER_ADMIN_KEY": ADMIN, **(env or {})}  # fmt: skip
    command = [str(Path(sys.executable).with_name("idledger")), "serve", "--port", str(port),
               "--workers", str(workers), "--no-access-log"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"idledger serve exited: {log.read()[-2000:]}")
                time.sleep(0.1)
            yield base, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)
