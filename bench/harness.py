"""What every benchmark shares: fresh stores, timing, and report rows."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
