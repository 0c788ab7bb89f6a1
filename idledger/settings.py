"""Settings (environment variables prefixed ``IDLEDGER_``) and opening the store.

SQLite is the zero-set-up default; PostgreSQL is chosen by URL.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from idledger.domain.group_commit import MAX_BATCH_BOUNDS, WINDOW_MS_BOUNDS, GroupCommitSettings
from idledger.domain.ledger import Ledger
from idledger.domain.service import Clock, utc_now

DEFAULT_STORE_URL = "sqlite:///var/idledger.db"
CONNECT_TIMEOUT_SECONDS = 3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDLEDGER_")

    store_url: str = Field(
        default=DEFAULT_STORE_URL,
        description="sqlite:///path/to/file.db or postgresql://user:pw@host:port/db?schema=s",
    )
    index_key: str | None = Field(
        default=None,
        description="Secret (hex, >= 32 chars) keying the uniqueness index. On SQLite it "
        "defaults to a key file beside the database; PostgreSQL requires it.",
    )

    admin_key: str | None = Field(
        default=None,
        description="Organization key for POST /apps and GET /apps/{id} "
        "(`Authorization: Key <admin key>`). Without it, app management is closed.",
    )
    embedded_projector: bool = Field(
        default=True,
        description="Keep the read models caught up inside this process. Turn off when "
        "a separate `idledger project --follow` worker owns them.",
    )
    poll_interval: float = Field(default=0.5, gt=0, description="Projector poll, in seconds.")
    consistency_timeout: float = Field(
        default=2.0,
        ge=0,
        description="How long a write waits for the read models (read-your-writes).",
    )
    max_body_bytes: int = Field(default=256 * 1024, gt=0)
    startup_timeout: float = Field(
        default=30.0,
        ge=0,
        description="How long `serve` keeps retrying an unreachable store at start-up "
        "before it exits non-zero (0: fail at once).",
    )
    group_commit_window_ms: float = Field(
        default=GroupCommitSettings.window_ms,
        ge=WINDOW_MS_BOUNDS[0],
        le=WINDOW_MS_BOUNDS[1],
        description="Group commit: how long a batch waits for commands still deciding "
        "(never when none is), in milliseconds.",
    )
    group_commit_max: int = Field(
        default=GroupCommitSettings.max_batch,
        ge=MAX_BATCH_BOUNDS[0],
        le=MAX_BATCH_BOUNDS[1],
        description="Group commit: most commands saved in one transaction (1: off).",
    )
    partitions: str = Field(
        default="",
        description="Per-app partitions (idledger/partitions.py): a count N (partitions "
        "1..N-1 beside the store: var/idledger.p1.db, or schema <schema>_p1) or a "
        "comma-separated list of the store URLs of partitions 1.. (0 is store_url). "
        "Empty: one partition.",
    )
    app_partitions: str = Field(
        default="",
        description="Pins, comma-separated <app id>=<partition number>: where an app "
        "moved to another partition is served (others are found where they were created).",
    )
    read_url: str = Field(
        default="",
        description="PostgreSQL hot standbys of the store, comma-separated "
        "(postgresql://user:pw@host:port[/db][?schema=s]; db and schema default to the "
        "store's): lookups and read-model queries are answered there (api/read_replicas.py).",
    )
    read_wait_ms: int = Field(
        default=250,
        ge=0,
        description="How long a read carrying X-Idledger-Min-Position waits for a standby "
        "to have applied that position before it is answered by the primary.",
    )
    read_max_lag: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a standby's read models may be behind the primary's before "
        "reads skip it.",
    )


class SettingsError(ValueError):
    """The settings cannot open a store; the message says which one and why."""


def sqlite_file(store_url: str) -> Path | None:
    """The database file a SQLite store URL names (None for another scheme),
    without touching the file system."""
    url = urlparse(store_url)
    if url.scheme != "sqlite":
        return None
    path = unquote(url.path[1:] if url.path.startswith("/") else url.path)
    if not path:
        raise SettingsError(f"store_url {store_url!r} names no SQLite file")
    return Path(path)


def store_env(store_url: str) -> dict[str, str]:
    """The eventsourcing library's environment for a store URL (on SQLite, the
    file's folder is made: whoever opens a store means to use it; the CLI checks
    first that a store exists unless its verb creates one)."""
    url = urlparse(store_url)
    if url.scheme == "sqlite":
        path = str(sqlite_file(store_url))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}
    if url.scheme in ("postgresql", "postgres"):
        schema = parse_qs(url.query).get("schema", [""])[0]
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_SCHEMA": schema,
            # A pooled connection is checked before use, so after a server restart
            # dead connections are replaced instead of failing requests.
            "POSTGRES_PRE_PING": "y",
            "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_SECONDS),
        }
    raise SettingsError(f"store_url {store_url!r}: use sqlite:///file.db or postgresql://...")


def read_store_envs(settings: Settings) -> list[dict[str, str]]:
    """The store environments of the hot standbys in ``read_url`` (none when empty).
    Each names a server; the database and schema are the store's unless given."""
    urls = [url.strip() for url in settings.read_url.split(",") if url.strip()]
    if not urls:
        return []
    primary = store_env(settings.store_url)
    if primary["PERSISTENCE_MODULE"] != "eventsourcing.postgres":
        raise SettingsError("IDLEDGER_READ_URL needs a PostgreSQL store (hot standbys of it)")
    envs = []
    for number, url in enumerate(urls, 1):
        parsed = urlparse(url)
        if parsed.scheme not in ("postgresql", "postgres") or not parsed.hostname:
            raise SettingsError(
                f"IDLEDGER_READ_URL entry {number} is not a PostgreSQL server's URL "
                "(postgresql://user:password@host:port/database)"
            )
        env = store_env(url)
        if not parsed.path.strip("/"):
            env["POSTGRES_DBNAME"] = primary["POSTGRES_DBNAME"]
        if not env["POSTGRES_SCHEMA"]:
            env["POSTGRES_SCHEMA"] = primary["POSTGRES_SCHEMA"]
        envs.append(env)
    return envs


def resolve_index_key(settings: Settings, env: dict[str, str]) -> bytes:
    if settings.index_key:
        try:
            key = bytes.fromhex(settings.index_key)
        except ValueError:
            raise SettingsError("IDLEDGER_INDEX_KEY must be hexadecimal") from None
        if len(key) < 16:
            raise SettingsError("IDLEDGER_INDEX_KEY must be at least 32 hex digits")
        return key
    if env["PERSISTENCE_MODULE"] != "eventsourcing.sqlite":
        raise SettingsError(
            "IDLEDGER_INDEX_KEY is required with PostgreSQL: every process sharing the "
            "store must use the same key (generate one with `idledger new-key`)"
        )
    key_file = Path(env["SQLITE_DBNAME"] + ".index-key")
    if not key_file.exists():
        _publish_new_key(key_file)
    return bytes.fromhex(key_file.read_text().strip())


def _publish_new_key(key_file: Path) -> None:
    """Write a fresh key beside the database. Linking a complete temporary file
    into place is atomic, so concurrent first starts agree on one key."""
    draft = key_file.with_name(f"{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        os.link(draft, key_file)
    except FileExistsError:
        pass  # another process published first; its key stands
    finally:
        draft.unlink()


def open_ledger(settings: Settings | None = None, clock: Clock = utc_now) -> Ledger:
    settings = settings or Settings()
    env = store_env(settings.store_url)
    group_commit = GroupCommitSettings(settings.group_commit_window_ms, settings.group_commit_max)
    return Ledger(
        env, index_key=resolve_index_key(settings, env), clock=clock, group_commit=group_commit
    )
