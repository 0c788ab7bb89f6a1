"""Fixtures: every store-backed test runs on a fresh SQLite file and on a fresh
PostgreSQL schema. The PostgreSQL half runs when IDLEDGER_TEST_POSTGRES is set
(CI sets it and then a missing server is a failure, not a skip)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from idledger.domain.ledger import Ledger
from idledger.settings import store_env

POSTGRES_URL = os.environ.get("IDLEDGER_TEST_POSTGRES", "")
POSTGRES_SKIP_REASON = (
    "PostgreSQL half skipped: set IDLEDGER_TEST_POSTGRES=postgresql://postgres@127.0.0.1:5432/test"
    " to run it (.ci/run does)"
)
INDEX_KEY = bytes(range(32))
MASTER_KEY = bytes(range(32, 64))
# Every process of a test store (subprocesses too) seals personal values under
# keys wrapped by this master key; PostgreSQL stores require one.
os.environ.setdefault("IDLEDGER_MASTER_KEY", MASTER_KEY.hex())

settings.register_profile(
    "idledger", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("idledger")


def pytest_report_header() -> str:
    return f"PostgreSQL: {POSTGRES_URL}" if POSTGRES_URL else POSTGRES_SKIP_REASON


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    uses_param = "postgres" in (params.get("store"), params.get("store_kind"))
    return uses_param or "postgres_env" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without IDLEDGER_TEST_POSTGRES the PostgreSQL half is left out, said once."""
    if POSTGRES_URL:
        return
    left_out = [item for item in items if _needs_postgres(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not _needs_postgres(item)]
        config.stash[_LEFT_OUT] = len(left_out)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    left_out = terminalreporter.config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(f"{POSTGRES_SKIP_REASON} ({left_out} tests)", yellow=True)
    elif not POSTGRES_URL and distributed(terminalreporter.config):
        terminalreporter.write_line(POSTGRES_SKIP_REASON, yellow=True)


def distributed(config: pytest.Config) -> bool:
    """Run by pytest-xdist (`make test`): the workers collect and leave tests out,
    so this process cannot count them, only say that they were."""
    return config.pluginmanager.hasplugin("dsession")


_LEFT_OUT = pytest.StashKey[int]()


class FakeClock:
    """A clock for tests: starts at a fixed instant and ticks one second per reading,
    so every command gets its own, predictable time."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextmanager
def fresh_store(kind: str) -> Iterator[dict[str, str]]:
    """The environment of a new, empty store: a SQLite file or a PostgreSQL schema."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as scratch:
            yield store_env(f"sqlite:///{Path(scratch) / 'ledger.db'}")
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield store_env(f"{POSTGRES_URL}?schema={schema}")
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def store_url(env: dict[str, str]) -> str:
    """The IDLEDGER_STORE_URL of a store environment made by ``fresh_store``."""
    if "SQLITE_DBNAME" in env:
        return f"sqlite:///{env['SQLITE_DBNAME']}"
    return f"{POSTGRES_URL}?schema={env['POSTGRES_SCHEMA']}"


@pytest.fixture
def sqlite_env() -> Iterator[dict[str, str]]:
    with fresh_store("sqlite") as env:
        yield env


@pytest.fixture
def postgres_env() -> Iterator[dict[str, str]]:
    with fresh_store("postgres") as env:
        yield env


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind, for tests that open several stores of their own."""
    kind: str = request.param
    return kind


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a fresh, empty store of each kind."""
    env: dict[str, str] = request.getfixturevalue(f"{request.param}_env")
    return env


@pytest.fixture
def ledger(store: dict[str, str], clock: FakeClock) -> Iterator[Ledger]:
    ledger = Ledger(store, index_key=INDEX_KEY, clock=clock)
    yield ledger
    ledger.close()
