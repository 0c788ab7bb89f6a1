"""The `idledger` command never leaves a person guessing: a bad setting, a store
that does not exist or does not answer, a read model owned by a running projector
each give one line on standard error and a non-zero exit code, never a traceback;
a verb that does not create stores creates nothing. On both stores, through the
real executable (and typer's runner where many verbs are checked)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from idledger.cli import app as cli
from idledger.domain.ledger import Ledger
from idledger.projections.service import Projector, ReadModels
from tests.conftest import INDEX_KEY, POSTGRES_URL, store_url
from tests.helpers import ios
from tests.serving import free_port

UNKNOWN = str(uuid.UUID(int=7))


def idledger(
    *args: str, timeout: float = 120, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """The real executable, as a person runs it (80 columns, nothing configured
    but the keys a PostgreSQL store needs); ``timeout`` fails the test."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("idledger")), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80", "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
             "IDLEDGER_MASTER_KEY": os.environ["IDLEDGER_MASTER_KEY"], **extra_env},
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str] | object) -> str:
    stderr: str = getattr(result, "stderr", "")
    assert "Traceback" not in stderr + getattr(result, "stdout", "")
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_an_unknown_store_url_is_one_line_and_keeps_its_password() -> None:
    result = idledger("verify", "--store-url", "mysql://operator:hunter2@db.example/ledger")

    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("idledger verify: store_url ")
    assert "use sqlite:///file.db or postgresql://" in line
    assert "hunter2" not in line


def test_a_bad_setting_names_its_variable() -> None:
    result = idledger("verify", IDLEDGER_POLL_INTERVAL="often", IDLEDGER_STORE_URL="sqlite:///x")

    assert result.returncode == 2
    assert "bad setting IDLEDGER_POLL_INTERVAL" in one_line(result)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/nowhere/ledger.db"

    quiet = idledger("audit", "user", UNKNOWN, "--store-url", missing)
    loud = idledger("--debug", "audit", "user", UNKNOWN, "--store-url", missing)

    assert quiet.returncode == 2
    assert one_line(quiet).startswith("idledger audit user: no store at ")
    assert loud.returncode != 0
    assert "Traceback" in loud.stderr
    assert "StoreMissing" in loud.stderr


VERBS_THAT_NEED_A_STORE = [
    ["project"],
    ["replay"],
    ["verify"],
    ["export"],
    ["audit", "subscription", UNKNOWN],
    ["dead-letters"],
    ["erase", "--app", UNKNOWN, "--user", UNKNOWN],
    ["seal"],
    ["apps", "show", UNKNOWN],
    ["apps", "rotate-key", UNKNOWN],
]


@pytest.mark.parametrize("verb", VERBS_THAT_NEED_A_STORE, ids=" ".join)
def test_a_mistyped_sqlite_path_is_refused_and_nothing_is_created(
    verb: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "var" / "idledgr.db"

    result = CliRunner().invoke(cli, [*verb, "--store-url", f"sqlite:///{missing}"])

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"idledger {' '.join(verb[:2] if verb[0] in ('audit', 'apps') else verb[:1])}: "
        f"no store at {missing}: the file does not exist (check --store-url or "
        "IDLEDGER_STORE_URL)"
    ]
    assert list(tmp_path.iterdir()) == []  # not even the folder


def test_the_store_comes_from_the_environment_too(tmp_path: Path) -> None:
    result = idledger("project", IDLEDGER_STORE_URL=f"sqlite:///{tmp_path}/ledger.db")

    assert result.returncode == 2
    assert f"no store at {tmp_path}/ledger.db" in one_line(result)


@pytest.mark.postgres
def test_a_schema_that_does_not_exist_is_refused_and_not_created() -> None:
    schema = f"missing_{uuid.uuid4().hex[:8]}"

    result = idledger("verify", "--store-url", f"{POSTGRES_URL}?schema={schema}")

    assert result.returncode == 2
    assert f"no store in schema '{schema}'" in one_line(result)
    with psycopg.connect(POSTGRES_URL) as connection:
        found = connection.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert found is None


def test_an_unreachable_postgresql_is_one_line_naming_it_without_its_password() -> None:
    nobody = f"postgresql://operator:hunter2@127.0.0.1:{free_port()}/ledger?schema=s"

    result = idledger("project", "--store-url", nobody)

    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("idledger project: the store (schema 's' of PostgreSQL 127.0.0.1:")
    assert "did not answer" in line
    assert "hunter2" not in line


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel completes them) and never
    says a word: a hung server or a firewall that swallows packets, not one that
    refuses at once."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield listener.getsockname()[1]


def test_a_postgresql_that_never_answers_fails_a_verb_with_one_line(silent_port: int) -> None:
    silent = f"postgresql://operator:hunter2@127.0.0.1:{silent_port}/ledger"
    began = time.monotonic()

    result = idledger("verify", "--store-url", silent, timeout=20)  # not minutes

    print(f"\nverify gave up after {time.monotonic() - began:.1f} s")  # README's figure
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith("idledger verify: the store (schema 'public' of PostgreSQL 127.0.0.1:")
    assert line.endswith("did not answer: ConnectionTimeout: connection timeout expired")
    assert "hunter2" not in line


def test_serve_retries_a_silent_postgresql_within_its_startup_timeout(silent_port: int) -> None:
    silent = f"postgresql://operator:hunter2@127.0.0.1:{silent_port}/ledger"
    began = time.monotonic()

    # Before each attempt was bounded, one attempt took 18 s: no retry, and the
    # process outlived this timeout.
    result = idledger(
        "serve", "--port", str(free_port()), "--store-url", silent, timeout=20,
        IDLEDGER_STARTUP_TIMEOUT="5", IDLEDGER_ADMIN_KEY="k" * 32,
    )  # fmt: skip

    print(f"\nserve (IDLEDGER_STARTUP_TIMEOUT=5) gave up after {time.monotonic() - began:.1f} s")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "hunter2" not in output
    retries = re.findall(r"event store unreachable \(ConnectionTimeout: [^)]*\); retrying", output)
    assert len(retries) >= 1, output  # several attempts fit in the 5 s
    assert (
        f"idledger serve: the event store (PostgreSQL at 127.0.0.1:{silent_port}/ledger) is "
        "unreachable: ConnectionTimeout: connection timeout expired\n" in output
    ), output
    assert "idledger on http" not in output


def test_project_takes_the_store_url(store: dict[str, str], ledger: Ledger) -> None:
    ledger.create_user(ledger.create_app("a").app_id, subscriptions=[ios("t")])

    result = idledger("project", "--store-url", store_url(store))

    assert result.returncode == 0, result.stderr
    assert "applied " in result.stdout
    assert "profiles: position " in result.stdout


def test_replay_into_live_refuses_before_any_work_while_a_projector_runs(
    store: dict[str, str], ledger: Ledger
) -> None:
    ledger.create_user(ledger.create_app("a").app_id, subscriptions=[ios("t")])
    models = ReadModels(store)
    projector = Projector(models)
    projector.acquire()  # as a running server's embedded projector holds them
    try:
        result = idledger("replay", "--into", "live", "--store-url", store_url(store))
    finally:
        projector.release()
        models.close()

    assert result.returncode == 3
    line = one_line(result)
    assert "is already being projected by another runner" in line
    assert result.stdout == ""
    assert rebuilds(store) == []  # refused before it rebuilt anything


def rebuilds(env: dict[str, str]) -> list[str]:
    if "SQLITE_DBNAME" in env:
        return sorted(p.name for p in Path(env["SQLITE_DBNAME"]).parent.glob("*_rebuild*"))
    with psycopg.connect(POSTGRES_URL) as connection:
        rows = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name LIKE %s",
            (env["POSTGRES_SCHEMA"], "%\\_rebuild%"),
        ).fetchall()
    return sorted(row[0] for row in rows)


def test_import_makes_a_new_store_and_says_so_but_append_needs_one(tmp_path: Path) -> None:
    export = tmp_path / "events.jsonl"
    source = f"sqlite:///{tmp_path}/source.db"
    assert idledger("apps", "create", "shop", "--store-url", source).returncode == 0
    export.write_text(idledger("export", "--store-url", source).stdout)
    target = tmp_path / "moved" / "ledger.db"

    appended = idledger("import", str(export), "--append", "--store-url", f"sqlite:///{target}")
    imported = idledger("import", str(export), "--store-url", f"sqlite:///{target}")

    assert appended.returncode == 2
    assert "no store at" in one_line(appended)
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr == f"new store: {target}\n"
    assert imported.stdout.startswith("imported 1 events")


@pytest.mark.postgres
def test_apps_create_makes_a_new_postgresql_schema_and_says_so() -> None:
    schema = f"new_{uuid.uuid4().hex[:8]}"
    try:
        created = idledger(
            "apps", "create", "Shop", "--store-url", f"{POSTGRES_URL}?schema={schema}"
        )
        shown = idledger(
            "apps",
            "show",
            created.stdout.split()[1],
            "--store-url",
            f"{POSTGRES_URL}?schema={schema}",
        )
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    assert created.returncode == 0, created.stderr
    assert created.stderr.splitlines()[0].startswith(f"new store: schema '{schema}' of PostgreSQL ")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"id\t{created.stdout.split()[1]}\nname\tShop\n")
