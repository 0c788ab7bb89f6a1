"""Exactly one runner may own a read model at a time.

On SQLite: an exclusive ``flock`` on a file beside the read model's database.
On PostgreSQL: a session advisory lock, held on a connection of its own.
Both are released by the operating system or the server if the runner dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from typing import IO

import psycopg


class ProjectionBusy(RuntimeError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"read model {name!r} is already being projected by another runner "
            "(an API process or `idledger project`); only one may run at a time"
        )
        self.name = name


def postgres_conninfo(env: dict[str, str]) -> str:
    return psycopg.conninfo.make_conninfo(
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        dbname=env["POSTGRES_DBNAME"],
        user=env["POSTGRES_USER"],
        password=env.get("POSTGRES_PASSWORD") or None,
        connect_timeout=env.get("POSTGRES_CONNECT_TIMEOUT") or "3",
    )


class RunnerLock:
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self._env = env
        self._file: IO[bytes] | None = None
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None or self._connection is not None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; else raise ``ProjectionBusy``."""
        deadline = time.monotonic() + wait
        while not self._try():
            if time.monotonic() >= deadline:
                raise ProjectionBusy(self.name)
            time.sleep(0.1)

    def check(self) -> bool:
        """Whether the lock is still held. An advisory lock dies with its
        connection (a server restart): then it is dropped, to be taken again."""
        if self._connection is None:
            return self.held
        try:
            self._connection.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None

    def _try(self) -> bool:
        if self.held:
            return True
        if "SQLITE_DBNAME" in self._env:
            return self._try_file(self._env["SQLITE_DBNAME"] + ".runner-lock")
        return self._try_advisory()

    def _try_file(self, path: str) -> bool:
        handle = open(path, "ab")  # noqa: SIM115 (kept open while the lock is held)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._file = handle
        return True

    def _try_advisory(self) -> bool:
        scope = f"idledger:{self._env.get('POSTGRES_SCHEMA') or 'public'}:{self.name}"
        key = int.from_bytes(
            hashlib.blake2b(scope.encode(), digest_size=8).digest(), "big", signed=True
        )
        connection = psycopg.connect(postgres_conninfo(self._env), autocommit=True)
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row is None or not row[0]:
            connection.close()
            return False
        self._connection = connection
        return True
