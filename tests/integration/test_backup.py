"""`idledger backup` of a store while a real server writes to it, and `idledger
restore` of that backup into a new store: every write acknowledged before the
backup began is in the restored store, which verifies and serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY, MASTER_KEY, POSTGRES_URL, store_url
from tests.serving import serving

WRITERS = 8


def _environ() -> dict[str, str]:
    return {
        **os.environ,
        "IDLEDGER_ADMIN_KEY": ADMIN_KEY,
        "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
        "IDLEDGER_MASTER_KEY": os.environ.get("IDLEDGER_MASTER_KEY", MASTER_KEY.hex()),
        "COLUMNS": "200",
    }


def idledger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("idledger")
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=60, check=False,
        env=env or _environ(),
    )  # fmt: skip


@contextmanager
def restore_target(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a store that does not exist yet (another name than the source's)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'copy.db'}"
        return
    schema = f"r_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{POSTGRES_URL}?schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Writers:
    """Client threads creating users; each acknowledged create is kept with the
    moment its 201 arrived."""

    def __init__(self, base: str, app_id: str, api_key: str) -> None:
        self.url = f"{base}/apps/{app_id}/users"
        self.headers = {"Authorization": f"Key {api_key}"}
        self.stop = threading.Event()
        self.acknowledged: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(WRITERS)
        ]

    def _write(self, writer: int) -> None:
        with httpx.Client(headers=self.headers, timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                external_id = f"w{writer}-{n}"
                n += 1
                try:
                    response = client.post(
                        self.url, json={"identity": {"external_id": external_id}}
                    )
                except httpx.TransportError as error:
                    self.failures.append(repr(error))
                    continue
                if response.status_code == 201:
                    with self._lock:
                        self.acknowledged.append((time.monotonic(), external_id))

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def test_a_backup_taken_while_serving_restores_every_acknowledged_write(
    store: dict[str, str], tmp_path: Path
) -> None:
    kind = "sqlite" if "SQLITE_DBNAME" in store else "postgres"
    source = store_url(store)
    dest = tmp_path / "backup"
    with serving(source, tmp_path / "server.log") as base:
        admin = {"Authorization": f"Key {ADMIN_KEY}"}
        app = httpx.post(f"{base}/apps", json={"name": "backup"}, headers=admin).json()
        with Writers(base, app["id"], app["basic_auth_key"]) as writers:
            while len(writers.acknowledged) < 40:
                time.sleep(0.05)
            started = time.monotonic()
            backed_up = idledger("backup", str(dest), "--store-url", source)
            time.sleep(0.3)  # writes go on after the backup, too
        assert backed_up.returncode == 0, backed_up.stderr
    before = [eid for at, eid in writers.acknowledged if at < started]
    assert len(before) >= 40

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["store"] == ("sqlite" if kind == "sqlite" else "postgresql")
    assert manifest["master_key_included"] is False
    assert all(at <= manifest["log_position"] for at in manifest["read_models"].values())

    with restore_target(kind, tmp_path) as target:
        restored = idledger("restore", str(dest), "--store-url", target)
        assert restored.returncode == 0, restored.stderr
        projected = idledger("project", env={**_environ(), "IDLEDGER_STORE_URL": target})
        assert projected.returncode == 0, projected.stderr
        verified = idledger("verify", "--store-url", target)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.count("identical") == 3

        with serving(target, tmp_path / "restored.log") as restored_base:
            assert httpx.get(f"{restored_base}/ready").status_code == 200
            headers = {"Authorization": f"Key {app['basic_auth_key']}"}
            users = f"{restored_base}/apps/{app['id']}/users/by/external_id"
            with httpx.Client(headers=headers, timeout=10) as client:
                missing = [e for e in before if client.get(f"{users}/{e}").status_code != 200]
        assert missing == []


@pytest.fixture(scope="module")
def small_backup(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A small SQLite store (the demo's) and a backup of it, shared by the refusals."""
    root = tmp_path_factory.mktemp("small")
    url = f"sqlite:///{root / 'source' / 'ledger.db'}"
    demo = idledger("demo", "--store-url", url)
    assert demo.returncode == 0, demo.stderr
    backed_up = idledger("backup", str(root / "backup"), "--store-url", url)
    assert backed_up.returncode == 0, backed_up.stderr
    return url, root / "backup"


def test_a_damaged_backup_is_refused_and_nothing_is_written(
    small_backup: tuple[str, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "backup"
    shutil.copytree(small_backup[1], dest)
    log = dest / "log.db"
    damaged = bytearray(log.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    log.write_bytes(bytes(damaged))
    target = tmp_path / "restored"

    refused = idledger("restore", str(dest), "--store-url", f"sqlite:///{target / 'copy.db'}")

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "idledger restore: backup damaged: log.db does not match its SHA-256"
    ]
    assert not target.exists() or not any(target.iterdir())


def test_a_restore_never_writes_over_a_store(small_backup: tuple[str, Path]) -> None:
    source, dest = small_backup
    live = Path(source.removeprefix("sqlite:///"))
    before = live.read_bytes()

    refused = idledger("restore", str(dest), "--store-url", source)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"idledger restore: {live} exists: restore only into a new store (never over one)"
    ]
    assert live.read_bytes() == before


def test_a_backup_into_a_non_empty_directory_is_refused(
    small_backup: tuple[str, Path], tmp_path: Path
) -> None:
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")

    refused = idledger("backup", str(dest), "--store-url", small_backup[0])

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"idledger backup: {dest} is not empty; choose a new or empty directory"
    ]
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
