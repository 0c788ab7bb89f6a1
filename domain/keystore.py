"""Per-subject data keys (crypto-shredding): each user and each subscription has
its own AES-256 key; its personal values are sealed under it, and destroying the
key erases them everywhere the ciphertext went (log, snapshots, exports, backups).

Keys are kept wrapped (AES-GCM) under a master key from the settings, in a table
of their own beside the events (``idledger_data_keys``). A new aggregate's key is
written in the same transaction as its first events, and an erasure destroys keys
in the same transaction as its event, through the recorders below. ``KeyStore``
is the seam a real KMS would implement (wrap/unwrap there instead of here).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

KEYS_TABLE = "idledger_data_keys"
NONCE_BYTES = 12
# Another process may destroy a key (an erasure there): a cached key is read again
# after this long, so every process stops reading an erased person's values within it.
KEY_CACHE_SECONDS = 10.0
KEY_CACHE_ENTRIES = 200_000


ABSENT = b""  # ``KeyStore.load``: no key was ever made for the subject


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


class KeyStore(Protocol):
    """Where wrapped keys live: ``load`` gives the wrapped key, ``None`` once it
    was destroyed, ``ABSENT`` if none was ever made; ``create`` keeps the first
    key made for a subject (a concurrent second one is ignored)."""

    def load(self, subject: UUID) -> bytes | None: ...

    def load_all(self, subjects: Iterable[UUID]) -> dict[UUID, bytes | None]: ...

    def create(self, subject: UUID, wrapped: bytes) -> None: ...


class KeyRing:
    """Data keys by subject: made for new aggregates, read (and cached) for old
    ones, forgotten at erasure. Thread-safe."""

    def __init__(self, master_key: bytes, store: KeyStore) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes (64 hex digits)")
        self._master = AESGCM(master_key)
        self._store = store
        self._cache: dict[UUID, tuple[float, bytes | None]] = {}
        self._pending: dict[UUID, bytes] = {}
        self._adopted: dict[UUID, bytes | None] = {}  # wrapped keys moved from another store
        self._lock = threading.Lock()

    def new_key(self, subject: UUID) -> bytes:
        """A key for a subject being created now; it is stored with the subject's
        first events, in their transaction (``take_pending``)."""
        key = AESGCM.generate_key(bit_length=256)
        with self._lock:
            self._pending[subject] = key
        return key

    def key(self, subject: UUID, *, for_writing: bool = False) -> bytes | None:
        """The subject's key, or ``None`` once destroyed. Writing to a subject that
        has none yet (written before keys existed) makes and stores one; reading
        never makes one."""
        now = time.monotonic()
        if self._fresh(subject, now):
            return self._cache[subject][1]
        pending = self._pending.get(subject)
        if pending is not None:
            return pending
        wrapped = self._store.load(subject)
        if wrapped == ABSENT and for_writing:
            self._store.create(subject, self._wrap(subject, AESGCM.generate_key(bit_length=256)))
            wrapped = self._store.load(subject)  # the first one made wins
        key = None if not wrapped else self._unwrap(subject, wrapped)
        if wrapped == ABSENT:
            return None  # not remembered: the key may yet be made
        self._remember(subject, key, now)
        return key

    def prefetch(self, subjects: Iterable[UUID]) -> None:
        """Read the keys of many subjects at once (a page of the log being replayed):
        one query instead of one per subject."""
        now = time.monotonic()
        missing = [s for s in set(subjects) if s not in self._pending and not self._fresh(s, now)]
        if missing:
            for subject, wrapped in self._store.load_all(missing).items():
                key = None if wrapped is None else self._unwrap(subject, wrapped)
                self._remember(subject, key, now)

    def _fresh(self, subject: UUID, now: float) -> bool:
        cached = self._cache.get(subject)
        return cached is not None and (cached[1] is None or now - cached[0] < KEY_CACHE_SECONDS)

    def has_pending(self) -> bool:
        return bool(self._pending or self._adopted)

    def take_pending(self, subjects: Iterable[UUID]) -> list[tuple[str, bytes | None]]:
        """Wrapped keys to store with these subjects' events (in their transaction)."""
        rows: list[tuple[str, bytes | None]] = []
        now = time.monotonic()
        with self._lock:
            for subject in subjects:
                key = self._pending.pop(subject, None)
                if key is not None:
                    rows.append((str(subject), self._wrap(subject, key)))
                    # Remembered at once: if the transaction fails, the new
                    # aggregate's id is never used again (a retry makes new ones).
                    self._remember(subject, key, now)
                elif subject in self._adopted:
                    rows.append((str(subject), self._adopted.pop(subject)))
        return rows

    def unmake(self, subjects: Iterable[UUID]) -> None:
        """New keys whose transaction rolled back, for events that will be sealed
        again (a group commit writing its commands one by one): forget them, so
        that sealing again makes and stores one key per subject, used throughout."""
        with self._lock:
            for subject in subjects:
                self._pending.pop(subject, None)
                self._cache.pop(subject, None)

    def adopt(self, wrapped_keys: dict[UUID, bytes | None]) -> None:
        """Keys of another store (same master key), to be stored with the imported
        events of their subjects; ``None`` keeps an erased subject erased."""
        for subject, wrapped in wrapped_keys.items():
            if wrapped is not None:
                self._unwrap(subject, wrapped)  # refuse a foreign master key now
        with self._lock:
            self._adopted.update(wrapped_keys)

    def forget(self, subjects: Iterable[UUID]) -> None:
        """The subjects' keys were destroyed here: never use a cached copy again."""
        now = time.monotonic()
        for subject in subjects:
            self._remember(subject, None, now)

    def _remember(self, subject: UUID, key: bytes | None, now: float) -> None:
        if len(self._cache) >= KEY_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[subject] = (now, key)

    def _wrap(self, subject: UUID, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, key, subject.bytes)

    def _unwrap(self, subject: UUID, wrapped: bytes) -> bytes:
        nonce, sealed = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        return self._master.decrypt(nonce, sealed, subject.bytes)


MASTER_KEY = "MASTER_KEY"  # IDLEDGER_MASTER_KEY in the environment


class MasterKeyMissing(ValueError):
    """PostgreSQL stores need IDLEDGER_MASTER_KEY; the message says so."""


def master_key(env: Any) -> bytes:
    """IDLEDGER_MASTER_KEY (64 hex digits); on SQLite, by default, a key file
    beside the database (``<db>.master-key``, mode 0600), made on first use."""
    configured = env.get(MASTER_KEY)
    if configured:
        try:
            key = bytes.fromhex(configured)
        except ValueError:
            raise MasterKeyMissing("IDLEDGER_MASTER_KEY must be hexadecimal") from None
        if len(key) != 32:
            raise MasterKeyMissing("IDLEDGER_MASTER_KEY must be 64 hex digits (32 bytes)")
        return key
    database = env.get("SQLITE_DBNAME")
    if not database or database == ":memory:" or "mode=memory" in database:
        raise MasterKeyMissing(
            "IDLEDGER_MASTER_KEY is required with PostgreSQL: every process sharing the "
            "store must use the same key (generate one with `idledger new-key`)"
        )
    path = f"{database}.master-key"
    if not os.path.exists(path):
        _publish(path, os.urandom(32).hex())
    with open(path) as handle:
        return bytes.fromhex(handle.read().strip())


def _publish(path: str, content: str) -> None:
    """Link a complete file into place: concurrent first starts agree on one key."""
    draft = f"{path}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process published first; its key stands
    finally:
        os.unlink(draft)


class _KeyedRecorder:
    """What both stores' recorders add: the key table, new keys written and
    erased keys destroyed in the events' own transaction."""

    keyring: KeyRing | None = None
    placeholder = "?"
    # SQLite: a destroyed key's bytes are overwritten, not left in a free page.
    secure_delete: str | None = "PRAGMA secure_delete = ON"

    def keys_table(self) -> str:
        return KEYS_TABLE

    def write_keys(self, cursor: Any, stored_events: Sequence[StoredEvent], kwargs: Any) -> None:
        if self.keyring is not None and self.keyring.has_pending():
            new = self.keyring.take_pending({_uuid(e.originator_id) for e in stored_events})
            if new:
                cursor.executemany(
                    f"INSERT INTO {self.keys_table()} (subject, wrapped) VALUES "
                    f"({self.placeholder}, {self.placeholder}) ON CONFLICT (subject) DO NOTHING",
                    new,
                )
        destroyed = [(str(subject),) for subject in kwargs.get("destroy_keys", ())]
        if destroyed and self.secure_delete:
            cursor.execute(self.secure_delete)
        if destroyed:
            cursor.executemany(
                f"INSERT INTO {self.keys_table()} (subject, wrapped) VALUES "
                f"({self.placeholder}, NULL) ON CONFLICT (subject) DO UPDATE SET wrapped = NULL",
                destroyed,
            )

    def destroy(self, subjects: Sequence[UUID]) -> None:
        """Destroy keys outside an erasure's transaction: erasing again, after a
        key-table backup older than the erasure was restored."""
        datastore: Any = getattr(self, "datastore")  # noqa: B009 (set by the library)
        with datastore.transaction(commit=True) as cursor:
            self.write_keys(cursor, [], {"destroy_keys": subjects})

    def load_all(self, subjects: Iterable[UUID]) -> dict[UUID, bytes | None]:
        """The wrapped keys (``None``: destroyed) of those subjects that have a row."""
        datastore: Any = getattr(self, "datastore")  # noqa: B009 (set by the library)
        found: dict[UUID, bytes | None] = {}
        wanted = [str(subject) for subject in subjects]
        with datastore.transaction(commit=False) as cursor:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join([self.placeholder] * len(chunk))
                cursor.execute(
                    f"SELECT subject, wrapped FROM {self.keys_table()} WHERE subject IN ({marks})",
                    chunk,
                )
                for row in cursor.fetchall():
                    wrapped = row["wrapped"]
                    found[UUID(row["subject"])] = None if wrapped is None else bytes(wrapped)
        return found

    def load(self, subject: UUID) -> bytes | None:
        datastore: Any = getattr(self, "datastore")  # noqa: B009 (set by the library)
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT wrapped FROM {self.keys_table()} WHERE subject = {self.placeholder}",
                (str(subject),),
            )
            row = cursor.fetchone()
        if row is None:
            return ABSENT
        return None if row["wrapped"] is None else bytes(row["wrapped"])

    def create(self, subject: UUID, wrapped: bytes) -> None:
        datastore: Any = getattr(self, "datastore")  # noqa: B009
        with datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"INSERT INTO {self.keys_table()} (subject, wrapped) VALUES "
                f"({self.placeholder}, {self.placeholder}) ON CONFLICT (subject) DO NOTHING",
                (str(subject), wrapped),
            )


class SQLiteLedgerRecorder(_KeyedRecorder, SQLiteApplicationRecorder):
    def wipe_freed_pages(self) -> None:
        """Fold the WAL (which still holds destroyed keys' old pages) into the file."""
        with self.datastore.get_connection(commit=True) as connection:
            connection._sqlite_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (subject TEXT PRIMARY KEY, wrapped BLOB) "
            "WITHOUT ROWID",  # one B-tree: a commit that adds a key writes fewer pages
        ]

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        self.write_keys(c, stored_events, kwargs)
        return returning


class PostgresLedgerRecorder(_KeyedRecorder, PostgresApplicationRecorder):
    placeholder = "%s"
    secure_delete = None  # dead tuples stay until VACUUM (see the README's Privacy)

    def wipe_freed_pages(self) -> None:
        """PostgreSQL keeps dead tuples until VACUUM (the README says so)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} "
                "(subject TEXT PRIMARY KEY, wrapped BYTEA)"
            ).format(schema=Identifier(self.datastore.schema), table=Identifier(KEYS_TABLE))
        )

    def keys_table(self) -> str:
        return f'"{self.datastore.schema}"."{KEYS_TABLE}"'

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        self.write_keys(curs, stored_events, kwargs)
