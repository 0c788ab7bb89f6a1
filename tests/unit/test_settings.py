"""Store selection by settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from idledger.settings import Settings, SettingsError, resolve_index_key, store_env


def test_sqlite_urls_name_a_file(tmp_path: Path) -> None:
    env = store_env(f"sqlite:///{tmp_path}/sub/ledger.db")

    assert env == {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": f"{tmp_path}/sub/ledger.db",
    }
    assert (tmp_path / "sub").is_dir()


def test_postgres_urls_give_connection_settings() -> None:
    env = store_env("postgresql://ann:s%40cret@db.local:6543/ledger?schema=tenant1")

    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.local", "6543")
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("ann", "s@cret")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_SCHEMA"]) == ("ledger", "tenant1")


def test_unknown_store_urls_are_refused() -> None:
    with pytest.raises(SettingsError, match="use sqlite"):
        store_env("mysql://localhost/x")


def test_sqlite_index_key_is_made_once_and_kept(tmp_path: Path) -> None:
    env = store_env(f"sqlite:///{tmp_path}/ledger.db")

    first = resolve_index_key(Settings(), env)
    second = resolve_index_key(Settings(), env)

    assert first == second
    assert len(first) == 32
    assert (tmp_path / "ledger.db.index-key").stat().st_mode & 0o077 == 0


def test_postgres_requires_an_explicit_index_key() -> None:
    env = store_env("postgresql://postgres@127.0.0.1/test")

    with pytest.raises(SettingsError, match="IDLEDGER_INDEX_KEY is required"):
        resolve_index_key(Settings(index_key=None), env)
    with pytest.raises(SettingsError, match="hexadecimal"):
        resolve_index_key(Settings(index_key="not-hex"), env)
    assert resolve_index_key(Settings(index_key="ab" * 16), env) == bytes([0xAB] * 16)
