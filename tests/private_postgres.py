"""A private, throw-away PostgreSQL server for tests that stop and start the database
under a running idledger (outages, crash recovery), which the shared server must
never suffer.

``with PrivatePostgres() as pg:`` runs initdb into a fresh temporary directory
(trust authentication, superuser ``postgres``), starts the server on a free port
of 127.0.0.1 only, and on exit stops it and removes the directory. ``pg.url`` is
its store URL; ``pg.stop("immediate")`` kills it as a crash would and
``pg.start()`` brings it back (crash recovery included) on the same port. fsync
and synchronous_commit stay on, so a committed transaction survives ``stop``.

PostgreSQL refuses to run as root: when the tests run as root, every PostgreSQL
command runs as the ``postgres`` OS user (``runuser``) and the directory is
handed to that user. Without the binaries the test is skipped with one reason;
with IDLEDGER_TEST_POSTGRES set (CI) that is a failure instead.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal, NoReturn

import pytest

StopMode = Literal["smart", "fast", "immediate"]

# Settings appended to postgresql.conf. The port is passed at each start (-o -p).
SERVER_SETTINGS = """
# tests/private_postgres.py
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sockets}'
max_connections = 50
shared_buffers = 16MB
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
"""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when IDLEDGER_TEST_POSTGRES says PostgreSQL tests are mandatory."""
    message = f"private PostgreSQL unavailable: {reason}"
    if os.environ.get("IDLEDGER_TEST_POSTGRES"):
        pytest.fail(f"{message} (IDLEDGER_TEST_POSTGRES is set, so this is mandatory)")
    pytest.skip(message)


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else the newest
    /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).parent] if on_path else []

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return directory
    return None


class PrivatePostgres:
    """A PostgreSQL server of its own in a temporary directory; see the module doc."""

    def __init__(self, bin_dir: Path | None = None, start_timeout: int = 30) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            unavailable("initdb/pg_ctl not found on PATH nor in /usr/lib/postgresql/*/bin")
        if not all(os.access(found / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            unavailable(f"no initdb/pg_ctl in {found}")
        self.bin_dir = found
        self.start_timeout = start_timeout
        self._as_user: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as the postgres user
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no 'postgres' OS user to run it as")
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("running as root and runuser is missing")
            self._as_user = [runuser, "-u", "postgres", "--"]
        self.root = Path()
        self.port = 0
        self.running = False

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PrivatePostgres:
        self.root = Path(tempfile.mkdtemp(prefix="idledger-pg-"))
        try:
            if self._owner is not None:
                os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
            self._run(
                "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(SERVER_SETTINGS.format(sockets=self.root))
            self._first_start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._remove()

    def start(self) -> None:
        """Start the server (after a crash: recover) and wait until it accepts connections."""
        self._run(
            "pg_ctl", "start", "-w", "-t", str(self.start_timeout), "-D", str(self.data_dir),
            "-l", str(self.log_path), "-o", f"-p {self.port}",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: StopMode = "immediate") -> None:
        """Stop the server; "immediate" kills it without a checkpoint, as a crash does."""
        self._run("pg_ctl", "stop", "-w", "-t", "30", "-D", str(self.data_dir), "-m", mode)
        self.running = False

    def log(self) -> str:
        """The server's own log (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _first_start(self) -> None:
        """Start on a free port; if another process took it meanwhile, try another."""
        for attempt in range(3):
            self.port = free_port()
            try:
                self.start()
                return
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.log():
                    raise

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as_user, str(self.bin_dir / tool), *args]
        done = subprocess.run(
            command,
            cwd=self.root,  # the postgres user may not be allowed into the current directory
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.start_timeout + 30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n--- server log ---\n{self.log()[-4000:]}"
            )

    def _remove(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """Last resort when pg_ctl could not stop it: SIGKILL the postmaster by its pid file
        (its children exit when they notice it is gone)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 9)
            time.sleep(0.5)
        except (OSError, ValueError, IndexError):
            pass
        self.running = False
