"""Per-app partitions: the partition map (``IDLEDGER_PARTITIONS`` and
``IDLEDGER_APP_PARTITIONS``) and where an app's events live.

A partition is a whole store: its own events table (SQLite file or PostgreSQL
schema), data keys, snapshots, read models and projection tracking. Every app
lives in exactly one partition, so apps in different partitions share no write
lock, no group-commit batch and no projector; a log position (read-your-writes,
the consistency wait, dead letters, exports) is a position in the app's
partition, and every request names its app.

Placement: a new app goes to partition ``app_id mod N``; an app that exists is
found where its ``App`` aggregate is (partitions are searched, the hashed one
first, and the answer remembered), so adding a partition moves no app. A pin
(``app_id=k``) overrides the search: that is how an app that was copied to
another partition (`idledger export --app`, `idledger import --append`) is
served from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlparse, urlunparse
from uuid import UUID

import psycopg
from psycopg import sql

from idledger.projections.lock import postgres_conninfo
from idledger.settings import Settings, SettingsError, sqlite_file, store_env

MAX_PARTITIONS = 256
DERIVED_SCHEMA = "idledger"  # a derived PostgreSQL partition's schema prefix without one


@dataclass(frozen=True)
class PartitionMap:
    """The store URL of each partition (0 is ``IDLEDGER_STORE_URL``) and the pins."""

    urls: tuple[str, ...]
    pins: Mapping[UUID, int] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> PartitionMap:
        urls = (settings.store_url, *_more_partitions(settings))
        pins = _pins(settings.app_partitions, len(urls))
        return cls(urls, pins)

    @property
    def count(self) -> int:
        return len(self.urls)

    def settings_of(self, settings: Settings, partition: int) -> Settings:
        """The settings of one partition: a single store, no partitions of its own, and
        the hot standbys of ``read_url`` pointed at its schema (a partition in another
        database than partition 0's has none: those standbys do not hold it)."""
        url = self.urls[partition]
        read_url = settings.read_url
        if partition and read_url.strip():
            read_url = _standbys_of(read_url, settings.store_url, url)
        return settings.model_copy(
            update={
                "store_url": url,
                "partitions": "",
                "app_partitions": "",
                "read_url": read_url,
            }
        )

    def for_new_app(self, app_id: UUID) -> int:
        return self.pins.get(app_id, app_id.int % self.count)

    def search_order(self, app_id: UUID) -> list[int]:
        """Where to look for an app: its pin alone, else the hashed partition first."""
        if app_id in self.pins:
            return [self.pins[app_id]]
        hashed = app_id.int % self.count
        return [hashed, *(k for k in range(self.count) if k != hashed)]


def partition_suffix(partition: int) -> str:
    """How names of a partition's read models are told apart (partition 0's plain)."""
    return f"@p{partition}" if partition else ""


def derived_url(store_url: str, partition: int) -> str:
    """Partition ``k``'s store beside the first: SQLite ``var/idledger.db`` ->
    ``var/idledger.p<k>.db``; PostgreSQL schema ``s`` -> ``s_p<k>`` (``idledger_p<k>``
    when the URL names none) in the same database."""
    path = sqlite_file(store_url)
    if path is not None:
        named = path.with_name(f"{path.stem}.p{partition}{path.suffix or '.db'}")
        return f"sqlite:///{named}"
    schema = store_env(store_url)["POSTGRES_SCHEMA"]  # (an unknown kind of URL is refused)
    return _with_schema(store_url, f"{schema or DERIVED_SCHEMA}_p{partition}")


def _with_schema(url: str, schema: str) -> str:
    """A PostgreSQL URL with its ``?schema=`` set to ``schema``."""
    parsed = urlparse(url)
    query = dict(parse_qsl(parsed.query))
    query["schema"] = schema
    return urlunparse(parsed._replace(query=urlencode(query)))


def _standbys_of(read_url: str, first: str, partition: str) -> str:
    """``read_url`` for a partition: each standby's schema set to the partition's."""
    ours, theirs = store_env(first), store_env(partition)
    server = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME")
    if [ours.get(k) for k in server] != [theirs.get(k) for k in server]:
        return ""
    standbys = (entry.strip() for entry in read_url.split(",") if entry.strip())
    return ",".join(_with_schema(standby, theirs["POSTGRES_SCHEMA"]) for standby in standbys)


def _more_partitions(settings: Settings) -> list[str]:
    """Partitions 1.. from ``IDLEDGER_PARTITIONS``: a count (stores derived from the
    store URL) or a comma-separated list of store URLs."""
    text = settings.partitions.strip()
    if not text:
        return []
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= MAX_PARTITIONS:
            raise SettingsError(f"IDLEDGER_PARTITIONS must be 1-{MAX_PARTITIONS}, not {count}")
        return [derived_url(settings.store_url, k) for k in range(1, count)]
    urls = [url.strip() for url in text.split(",") if url.strip()]
    for number, url in enumerate(urls, 1):
        if urlparse(url).scheme not in ("sqlite", "postgresql", "postgres"):
            raise SettingsError(
                f"IDLEDGER_PARTITIONS entry {number} is neither a count nor a store URL "
                "(sqlite:///file.db or postgresql://...)"
            )
    if len({settings.store_url, *urls}) != len(urls) + 1:
        raise SettingsError("IDLEDGER_PARTITIONS names one store twice (or the store itself)")
    return urls


def _pins(text: str, count: int) -> dict[UUID, int]:
    pins: dict[UUID, int] = {}
    for number, entry in enumerate((e.strip() for e in text.split(",") if e.strip()), 1):
        app, _, partition = entry.partition("=")
        try:
            app_id, where = UUID(app.strip()), int(partition)
        except ValueError:
            raise SettingsError(
                f"IDLEDGER_APP_PARTITIONS entry {number} is not <app id>=<partition number>"
            ) from None
        if not 0 <= where < count:
            raise SettingsError(
                f"IDLEDGER_APP_PARTITIONS entry {number} names partition {where}; "
                f"there are {count} (0-{count - 1})"
            )
        pins[app_id] = where
    return pins


def make_partition_schema(store_url: str) -> None:
    """Partitions 1.. are made on first use: on PostgreSQL their schema (the
    library makes the tables), on SQLite the file (as any store)."""
    env = store_env(store_url)
    if env["PERSISTENCE_MODULE"] != "eventsourcing.postgres" or not env["POSTGRES_SCHEMA"]:
        return
    with psycopg.connect(postgres_conninfo(env), autocommit=True, connect_timeout=3) as connection:
        connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"]))
        )
