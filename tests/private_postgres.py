"""A private, throw-away PostgreSQL server for tests that stop and start the database
under a running idledger (outages, crash recovery), which the shared server must
never suffer.

``with PrivatePostgres() as pg:`` runs initdb into a fresh temporary directory
(trust authentication, superuser ``postgres``), starts the server on a free port
of 127.0.0.1 only, and on exit stops it and removes the directory. ``pg.url`` is
its store URL; ``pg.stop("immediate")`` kills it as a crash would and
``pg.start()`` brings it back (crash recovery included) on the same port. fsync
and synchronous_commit stay on, so a committed transaction survives ``stop``.
``with HotStandby(primary_url) as standby:`` is a real hot standby of a running
server (pg_basebackup -R, streaming replication), made and removed the same way.

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
from collections.abc import Mapping
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


# A hot standby's own settings. Its copy of the primary's data directory holds no
# postgresql.conf on Debian (the cluster's lives in /etc), so one is written here;
# the limits a standby must not set below its primary's are copied from it.
STANDBY_SETTINGS = """
# tests/private_postgres.py: a hot standby
listen_addresses = '127.0.0.1'
unix_socket_directories = '{sockets}'
hot_standby = on
hot_standby_feedback = on
shared_buffers = 16MB
fsync = off
logging_collector = off
"""
STANDBY_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
# What a standby must match on its primary (PostgreSQL refuses to start otherwise).
PRIMARY_LIMITS = (
    "max_connections", "max_worker_processes", "max_wal_senders",
    "max_prepared_transactions", "max_locks_per_transaction",
)  # fmt: skip
REPLICATION_RULE = "host replication all 127.0.0.1/32 trust"
BACKUP_ATTEMPTS = 25


def allow_replication(primary_url: str) -> None:
    """Make sure the primary lets 127.0.0.1 connect for replication (trust), as
    pg_basebackup and the standby's WAL receiver do. The rule is appended to the
    server's own pg_hba.conf (found with SHOW hba_file) once, and the
    configuration reloaded; without the right to write that file, the test is
    unavailable (skipped, or failed in CI) with the line to add."""
    import psycopg  # the PostgreSQL half only

    with psycopg.connect(primary_url, autocommit=True) as connection:
        row = connection.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba = Path(str(row[0]))
        try:
            rules = hba.read_text()
        except OSError as error:
            unavailable(f"cannot read {hba} ({error}); add {REPLICATION_RULE!r} to it")
        if re.search(r"^\s*host\s+replication\s+all\s+127\.0\.0\.1/32\s+trust\b", rules, re.M):
            return
        try:
            with hba.open("a") as out:
                out.write(f"\n# added by idledger's tests (tests/private_postgres.py)\n"
                          f"{REPLICATION_RULE}\n")  # fmt: skip
        except OSError as error:
            unavailable(f"cannot add {REPLICATION_RULE!r} to {hba}: {error}")
        connection.execute("SELECT pg_reload_conf()")


class HotStandby(PrivatePostgres):
    """A real hot standby of a running PostgreSQL server (PostgreSQL's own
    streaming replication) on a free port of 127.0.0.1: ``pg_basebackup -R``
    into a temporary directory owned by the postgres user (mode 0700), then
    ``pg_ctl start`` with ``hot_standby=on``. On exit it is stopped and the
    directory removed, whatever happened. ``pause_replay()`` / ``resume_replay()``
    hold and release its replay of the primary's WAL; ``stop()`` and
    ``start()`` work as on ``PrivatePostgres``.

    pg_basebackup copies the whole cluster: keep the primary small (the test
    database of CI's server copies in about a second)."""

    def __init__(self, primary_url: str, start_timeout: int = 60) -> None:
        super().__init__(start_timeout=start_timeout)
        # pg_ctl on PATH may be a lone link into the installation that has pg_basebackup.
        self.bin_dir = (self.bin_dir / "pg_ctl").resolve().parent
        if not os.access(self.bin_dir / "pg_basebackup", os.X_OK):
            unavailable(f"no pg_basebackup in {self.bin_dir}")
        self.primary_url = primary_url

    @property
    def url(self) -> str:
        """The standby's URL for the primary's database (the same name)."""
        import psycopg

        dbname = psycopg.conninfo.conninfo_to_dict(self.primary_url).get("dbname") or "postgres"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def __enter__(self) -> HotStandby:
        import psycopg

        allow_replication(self.primary_url)
        primary = psycopg.conninfo.conninfo_to_dict(self.primary_url)
        with psycopg.connect(self.primary_url, autocommit=True) as connection:
            limits = {
                name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in PRIMARY_LIMITS
            }
        self.root = Path(tempfile.mkdtemp(prefix="idledger-standby-"))
        try:
            if self._owner is not None:
                os.chown(self.root, self._owner.pw_uid, self._owner.pw_gid)
            os.chmod(self.root, 0o700)
            self._base_backup(primary)
            settings = STANDBY_SETTINGS.format(sockets=self.root) + "".join(
                f"{name} = {value}\n" for name, value in limits.items()
            )
            for name, text in (
                ("postgresql.conf", settings),
                ("pg_hba.conf", STANDBY_HBA),
                ("pg_ident.conf", ""),
            ):
                (self.data_dir / name).write_text(text)
                if self._owner is not None:
                    os.chown(self.data_dir / name, self._owner.pw_uid, self._owner.pw_gid)
            self._first_start()
        except BaseException:
            self._remove()
            raise
        return self

    def _base_backup(self, primary: Mapping[str, object]) -> None:
        """pg_basebackup -R into ``data_dir``. A replication rule just added reaches
        the server with its reload, a moment later: until then it is retried."""
        for attempt in range(BACKUP_ATTEMPTS):
            try:
                self._run(
                    "pg_basebackup", "-D", str(self.data_dir), "-R", "-X", "stream",
                    "-c", "fast", "--no-sync",
                    "-h", str(primary.get("host") or "127.0.0.1"),
                    "-p", str(primary.get("port") or 5432),
                    "-U", str(primary.get("user") or "postgres"),
                )  # fmt: skip
                return
            except RuntimeError as error:
                if "pg_hba.conf" not in str(error) or attempt == BACKUP_ATTEMPTS - 1:
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
                time.sleep(0.2)

    def start(self) -> None:
        self._run(
            "pg_ctl", "start", "-w", "-t", str(self.start_timeout), "-D", str(self.data_dir),
            "-l", str(self.log_path), "-o", f"-p {self.port} -c hot_standby=on",
        )  # fmt: skip
        self.running = True

    def execute(self, statement: str) -> object:
        """Run one statement on the standby as its superuser; the first value it returns."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            row = connection.execute(statement).fetchone()
            return row[0] if row else None

    def pause_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")
