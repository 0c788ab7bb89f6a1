"""Back up a store while it serves, and restore a backup into a new store.

SQLite: every database file is copied with SQLite's online backup API (one read
transaction per file, so each copy is a consistent snapshot of its file while
writers go on). The read models are copied FIRST and the log LAST: a read model
only follows the log, so each copied read model's position is at most the log's
head when it was copied, which is at most the log's head when the log is copied
after it. A read model in the copy may be behind the log (it catches up when the
restored store is projected), never ahead (which would make it skip the events
that the restored store later writes at those positions).

PostgreSQL: ``pg_dump --format=custom --schema=<schema>`` run on a snapshot
exported by a REPEATABLE READ transaction that reads the log's last position and
the read models' positions first: the manifest's positions are exactly the
dump's. Restoring into another schema name streams ``pg_restore``'s script
through a rewrite of the schema name into ``psql --single-transaction``: all or
nothing.

Both write ``manifest.json``: format, store kind, the log's last position in the
copy, each read model's position, created_at, and every file's size and SHA-256.
A restore verifies all of it before writing anything.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlparse

import psycopg
from psycopg import sql

from idledger.projections.engine import READ_MODELS, is_sqlite, view_env
from idledger.projections.lock import postgres_conninfo
from idledger.settings import SettingsError, store_env

FORMAT = "idledger-backup/1"
MANIFEST = "manifest.json"
DUMP = "store.dump"
INDEX_KEY_FILE = "index-key"
MASTER_KEY_FILE = "master-key"
EVENTS_TABLE = "idledger_events"  # PostgreSQL: LedgerLog.name + "_events"
CHECK_MESSAGE = b"idledger backup: master key check"
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore refused or failed; the message is one line for the operator."""


@dataclass(frozen=True)
class BackupResult:
    dest: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class RestoreResult:
    target: str
    manifest: dict[str, Any]


# --- keys -------------------------------------------------------------------------


def master_key_check(key_hex: str) -> str:
    """A fingerprint of a master key (an HMAC of a fixed message under it): a restore
    compares it with the key it will run with, never learning the key itself."""
    key = _hex_key(key_hex, "master key")
    return hmac.new(key, CHECK_MESSAGE, hashlib.sha256).hexdigest()[:32]


def _hex_key(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.strip())
    except ValueError:
        raise BackupError(f"the {what} is not hexadecimal") from None


def _source_master_key(env: dict[str, str]) -> str | None:
    """The master key the source store runs with (as ``domain.keystore.master_key``
    finds it), without ever making one."""
    configured = os.environ.get("IDLEDGER_MASTER_KEY")
    if configured:
        return configured.strip()
    if is_sqlite(env):
        path = Path(env["SQLITE_DBNAME"] + ".master-key")
        if path.exists():
            return path.read_text().strip()
    return None


def _source_index_key(env: dict[str, str]) -> str | None:
    configured = os.environ.get("IDLEDGER_INDEX_KEY")
    if configured:
        return configured.strip()
    if is_sqlite(env):
        path = Path(env["SQLITE_DBNAME"] + ".index-key")
        if path.exists():
            return path.read_text().strip()
    return None


# --- files and the manifest -----------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(dest: Path, name: str, role: str) -> dict[str, Any]:
    path = dest / name
    return {"name": name, "role": role, "size": path.stat().st_size, "sha256": sha256_of(path)}


def _write_secret(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


def _prepare_dest(dest: Path) -> bool:
    """Make DEST (or accept an empty one); return whether it was made here."""
    if dest.exists():
        if not dest.is_dir():
            raise BackupError(f"{dest} exists and is not a directory; choose a new one")
        if any(dest.iterdir()):
            raise BackupError(f"{dest} is not empty; choose a new or empty directory")
        return False
    dest.mkdir(parents=True)
    return True


def _write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    draft = dest / f".{MANIFEST}.tmp"
    draft.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(draft, dest / MANIFEST)


def _abandon(dest: Path, made: bool) -> None:
    """Remove a failed backup's files (and DEST, if this backup made it)."""
    if made:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _keys_into(
    dest: Path, env: dict[str, str], with_master_key: bool, manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    files = []
    index_key = _source_index_key(env)
    if index_key is not None:
        _hex_key(index_key, "index key")
        _write_secret(dest / INDEX_KEY_FILE, index_key)
        files.append(_describe(dest, INDEX_KEY_FILE, "index-key"))
    master = _source_master_key(env)
    manifest["master_key_included"] = False
    manifest["master_key_check"] = master_key_check(master) if master else None
    if with_master_key:
        if master is None:
            raise BackupError(
                "--with-master-key: the store has no master key file and "
                "IDLEDGER_MASTER_KEY is not set"
            )
        _write_secret(dest / MASTER_KEY_FILE, master)
        files.append(_describe(dest, MASTER_KEY_FILE, "master-key"))
        manifest["master_key_included"] = True
    return files


# --- backup -----------------------------------------------------------------------


def backup(store_url: str, dest: Path, *, with_master_key: bool = False) -> BackupResult:
    """Copy the store into the new (or empty) directory ``dest`` with a manifest."""
    env = _env(store_url)
    made = _prepare_dest(dest)
    try:
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if is_sqlite(env):
            files = _backup_sqlite(env, dest, manifest)
        else:
            files = _backup_postgres(env, dest, manifest)
        files += _keys_into(dest, env, with_master_key, manifest)
        manifest["files"] = files
        _write_manifest(dest, manifest)
    except BaseException:
        _abandon(dest, made)
        raise
    return BackupResult(dest, manifest)


def _env(store_url: str) -> dict[str, str]:
    try:
        return store_env(store_url)
    except SettingsError as wrong:
        raise BackupError(str(wrong)) from None


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    """Open an existing database for reading (never creating it)."""
    connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=rw", uri=True)
    connection.execute("PRAGMA busy_timeout = 10000")
    return connection


def _sqlite_copy(source: Path, target: Path, position_sql: str) -> int:
    """Copy one database with the online backup API (one consistent snapshot)
    and return the position the copy holds, read from the copy itself."""
    src = _sqlite_connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # all pages in one step: one read transaction
            dst.execute("PRAGMA journal_mode = DELETE")  # a self-contained file
            try:
                (position,) = dst.execute(position_sql).fetchone()
            except sqlite3.OperationalError:
                position = None  # no table yet: nothing was ever written
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()
    return int(position or 0)


def _backup_sqlite(env: dict[str, str], dest: Path, manifest: dict[str, Any]) -> list[Any]:
    log = Path(env["SQLITE_DBNAME"])
    if not log.is_file():
        raise BackupError(f"no SQLite store at {log}")
    manifest["store"] = "sqlite"
    files: list[dict[str, Any]] = []
    read_models: dict[str, int] = {}
    # Read models first, the log last: a copied read model can then never be
    # ahead of the copied log.
    for name in READ_MODELS:
        path = Path(view_env(env, name)["SQLITE_DBNAME"])
        if not path.is_file():
            continue
        copy = f"{name}.db"
        read_models[name] = _sqlite_copy(
            path, dest / copy, "SELECT MAX(notification_id) FROM tracking"
        )
        files.append(_describe(dest, copy, f"read-model:{name}"))
    position = _sqlite_copy(log, dest / "log.db", "SELECT MAX(rowid) FROM stored_events")
    files.insert(0, _describe(dest, "log.db", "log"))
    ahead = {name: at for name, at in read_models.items() if at > position}
    if ahead:  # cannot happen with this order; refuse a copy that would diverge
        raise BackupError(f"read model(s) ahead of the copied log: {ahead}; run backup again")
    manifest["log_position"] = position
    manifest["read_models"] = read_models
    return files


def postgres_binary(name: str) -> str:
    """A PostgreSQL client program: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/", path)
        return int(match[1]) if match else 0

    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    if not candidates:
        raise BackupError(f"{name} not found on PATH or in /usr/lib/postgresql/*/bin")
    return candidates[-1]


def _pg_environ(env: dict[str, str]) -> dict[str, str]:
    """Connection settings for pg_dump / pg_restore / psql (the password never on
    a command line)."""
    environ = dict(os.environ)
    environ.update(
        PGHOST=env["POSTGRES_HOST"],
        PGPORT=env["POSTGRES_PORT"],
        PGUSER=env["POSTGRES_USER"],
        PGDATABASE=env["POSTGRES_DBNAME"],
        PGCONNECT_TIMEOUT=env.get("POSTGRES_CONNECT_TIMEOUT") or "3",
    )
    if env.get("POSTGRES_PASSWORD"):
        environ["PGPASSWORD"] = env["POSTGRES_PASSWORD"]
    return environ


def _schema(env: dict[str, str]) -> str:
    return env.get("POSTGRES_SCHEMA") or "public"


def _backup_postgres(env: dict[str, str], dest: Path, manifest: dict[str, Any]) -> list[Any]:
    schema = _schema(env)
    manifest["store"] = "postgresql"
    manifest["schema"] = schema
    pg_dump = postgres_binary("pg_dump")
    try:
        connection = psycopg.connect(postgres_conninfo(env))
    except psycopg.Error as error:
        raise BackupError(f"cannot connect to PostgreSQL: {_first_line(error)}") from None
    with connection:
        connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = connection.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        if not _table_exists(connection, schema, EVENTS_TABLE):
            raise BackupError(f"no idledger store in schema {schema!r}")
        position = _max(connection, schema, EVENTS_TABLE)
        read_models = {
            name: _max(connection, schema, f"{name}_tracking")
            for name in READ_MODELS
            if _table_exists(connection, schema, f"{name}_tracking")
        }
        # The dump imports this transaction's snapshot: it holds exactly these positions.
        command = [pg_dump, "--format=custom", f"--schema={schema}", f"--snapshot={snapshot}",
                   "--no-password", f"--file={dest / DUMP}"]  # fmt: skip
        done = subprocess.run(
            command, env=_pg_environ(env), capture_output=True, text=True, check=False
        )
        connection.rollback()
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {_first_line(done.stderr)}")
    manifest["log_position"] = position
    manifest["read_models"] = read_models
    return [_describe(dest, DUMP, "dump")]


def _table_exists(connection: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = connection.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()
    return row is not None and row[0] is not None


def _max(connection: psycopg.Connection[Any], schema: str, table: str) -> int:
    query = sql.SQL("SELECT MAX(notification_id) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    row = connection.execute(query).fetchone()
    return int(row[0] or 0) if row else 0


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# --- restore ----------------------------------------------------------------------


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest, with every file present and matching its size and SHA-256."""
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(f"{path} not found: not an idledger backup")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as bad:
        raise BackupError(f"{path} is not valid JSON ({bad})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: unknown backup format (expected {FORMAT})")
    files = manifest.get("files")
    if manifest.get("store") not in ("sqlite", "postgresql") or not isinstance(files, list):
        raise BackupError(f"{path}: incomplete manifest")
    for entry in files:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise BackupError(f"{path}: bad file entry {entry!r}")
        file = source / name
        if not file.is_file():
            raise BackupError(f"backup damaged: {name} is missing")
        if file.stat().st_size != entry.get("size"):
            raise BackupError(f"backup damaged: {name} has the wrong size")
        if sha256_of(file) != entry.get("sha256"):
            raise BackupError(f"backup damaged: {name} does not match its SHA-256")
    return manifest


def _file(manifest: dict[str, Any], role: str) -> str | None:
    for entry in manifest["files"]:
        if entry.get("role") == role:
            name: str = entry["name"]
            return name
    return None


def _check_keys(source: Path, manifest: dict[str, Any], *, key_files_apply: bool) -> None:
    """Refuse a restore whose store would run with keys other than the source's."""
    index_file = _file(manifest, "index-key")
    configured_index = os.environ.get("IDLEDGER_INDEX_KEY")
    if index_file is not None and configured_index:
        backed_up = (source / index_file).read_text().strip()
        if _hex_key(configured_index, "IDLEDGER_INDEX_KEY") != _hex_key(backed_up, "index key"):
            raise BackupError(
                "IDLEDGER_INDEX_KEY differs from the backup's index key: lookups would fail; "
                "unset it or set it to the source store's key"
            )
    if not configured_index and not (key_files_apply and index_file):
        raise BackupError("the backup holds no index key: set IDLEDGER_INDEX_KEY to the source's")
    master = os.environ.get("IDLEDGER_MASTER_KEY")
    master_file = _file(manifest, "master-key")
    if not master and key_files_apply and master_file is not None:
        master = (source / master_file).read_text().strip()
    if not master:
        raise BackupError(
            "the backup holds no master key (taken without --with-master-key): set "
            "IDLEDGER_MASTER_KEY to the source store's master key"
        )
    expected = manifest.get("master_key_check")
    if expected and not hmac.compare_digest(master_key_check(master), str(expected)):
        raise BackupError(
            "IDLEDGER_MASTER_KEY is not the master key the backup was written with: "
            "personal values would be unreadable"
        )


def restore(source: Path, store_url: str) -> RestoreResult:
    """Verify the backup, then restore it as a new store at ``store_url``."""
    manifest = read_manifest(source)
    scheme = urlparse(store_url).scheme
    kind = "sqlite" if scheme == "sqlite" else "postgresql"
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise BackupError(f"store_url {store_url!r}: use sqlite:///file.db or postgresql://...")
    if kind != manifest["store"]:
        raise BackupError(f"this is a {manifest['store']} backup; restore it into a like store")
    if kind == "sqlite":
        _check_keys(source, manifest, key_files_apply=True)
        _restore_sqlite(source, manifest, store_url)
    else:
        _check_keys(source, manifest, key_files_apply=False)
        _restore_postgres(source, manifest, _env(store_url))
    return RestoreResult(store_url, manifest)


def _sqlite_targets(env: dict[str, str], manifest: dict[str, Any]) -> dict[str, Path]:
    """Where each backed-up file goes under the target's names."""
    log = env["SQLITE_DBNAME"]
    targets: dict[str, Path] = {}
    for entry in manifest["files"]:
        role: str = entry["role"]
        if role == "log":
            targets[entry["name"]] = Path(log)
        elif role.startswith("read-model:") and role.split(":", 1)[1] in READ_MODELS:
            targets[entry["name"]] = Path(view_env(env, role.split(":", 1)[1])["SQLITE_DBNAME"])
        elif role in ("index-key", "master-key"):
            targets[entry["name"]] = Path(f"{log}.{role}")
        else:
            raise BackupError(f"manifest: unknown file role {role!r}")
    return targets


def _occupied(env: dict[str, str]) -> list[Path]:
    """Files of a store at the target (any one means a store is there)."""
    log = env["SQLITE_DBNAME"]
    databases = [log] + [view_env(env, name)["SQLITE_DBNAME"] for name in READ_MODELS]
    candidates = [Path(f"{db}{suffix}") for db in databases for suffix in ("", "-wal", "-shm")]
    candidates += [Path(f"{log}.index-key"), Path(f"{log}.master-key")]
    return [path for path in candidates if path.exists()]


def _restore_sqlite(source: Path, manifest: dict[str, Any], store_url: str) -> None:
    path = urlparse(store_url).path
    if not path.lstrip("/"):
        raise BackupError(f"store_url {store_url!r} names no SQLite file")
    env = _env(store_url)  # makes the target's directory
    occupied = _occupied(env)
    if occupied:
        raise BackupError(f"{occupied[0]} exists: restore only into a new store (never over one)")
    targets = _sqlite_targets(env, manifest)
    digests = {entry["name"]: entry["sha256"] for entry in manifest["files"]}
    # The log goes into place last: until it is there, no store is at the target.
    order = sorted(targets, key=lambda name: targets[name] == Path(env["SQLITE_DBNAME"]))
    placed: list[Path] = []
    try:
        for name in order:
            _place(source / name, targets[name], digests[name], secret=name in (
                INDEX_KEY_FILE, MASTER_KEY_FILE))  # fmt: skip
            placed.append(targets[name])
    except BaseException:
        for done in placed:
            done.unlink(missing_ok=True)
        raise


def _place(source: Path, target: Path, sha256: str, *, secret: bool) -> None:
    """Copy to a draft beside the target, check it, then link it into place
    (refusing, atomically, if something appeared there meanwhile)."""
    draft = target.with_name(f".{target.name}.restoring-{secrets.token_hex(4)}")
    try:
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        if sha256_of(draft) != sha256:
            raise BackupError(f"{source.name} changed while it was being restored; try again")
        try:
            os.link(draft, target)
        except FileExistsError:
            raise BackupError(f"{target} appeared during the restore; nothing kept") from None
    finally:
        draft.unlink(missing_ok=True)


SCHEMA_STATEMENT = re.compile(r"^(CREATE|COMMENT ON|ALTER) SCHEMA ")


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


def schema_rewriter(old: str, new: str) -> Any:
    """Rename the schema in pg_restore's script, outside the COPY data: every
    qualified name (``old.x``, ``"old".x``, also inside function bodies and
    ``'old.seq'::regclass``)."""
    patterns = [re.escape(_quoted(old)) + r"(?=\.)"]
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", old):
        patterns.append(r"(?<![\w\"$])" + re.escape(old) + r"(?=\.)")
    pattern = re.compile("|".join(patterns))
    replacement = _quoted(new)
    return lambda line: pattern.sub(lambda _: replacement, line)


def _script(lines: IO[str], old: str, new: str) -> Iterator[str]:
    """pg_restore's script for schema ``old``, as a script for the new schema ``new``."""
    rename = schema_rewriter(old, new)
    yield f"CREATE SCHEMA {_quoted(new)};\n"
    in_data = False
    for line in lines:
        if in_data:
            in_data = line != "\\.\n"
            yield line
            continue
        if SCHEMA_STATEMENT.match(line):
            continue  # the schema is made above, under its new name
        if line.startswith("COPY ") and line.rstrip().endswith("FROM stdin;"):
            in_data = True
        yield rename(line)


def _restore_postgres(source: Path, manifest: dict[str, Any], env: dict[str, str]) -> None:
    target = env.get("POSTGRES_SCHEMA") or ""
    if not target:
        raise BackupError("name a new schema to restore into: postgresql://...?schema=<name>")
    dump = _file(manifest, "dump")
    if dump is None:
        raise BackupError("manifest: the backup has no dump")
    try:
        with psycopg.connect(postgres_conninfo(env), autocommit=True) as connection:
            row = connection.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (target,)
            ).fetchone()
    except psycopg.Error as error:
        raise BackupError(f"cannot connect to PostgreSQL: {_first_line(error)}") from None
    if row is not None:
        raise BackupError(f"schema {target!r} exists: restore only into a new schema")
    pg_restore, psql = postgres_binary("pg_restore"), postgres_binary("psql")
    environ = _pg_environ(env)
    with tempfile.TemporaryFile("w+") as read_errors, tempfile.TemporaryFile("w+") as errors:
        reader = subprocess.Popen(
            [pg_restore, "--no-owner", "--no-privileges", "--file=-", str(source / dump)],
            stdout=subprocess.PIPE, stderr=read_errors, text=True, env=environ,
        )  # fmt: skip
        writer = subprocess.Popen(
            [psql, "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
             "--file=-"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, text=True,
            env=environ,
        )  # fmt: skip
        assert reader.stdout is not None
        assert writer.stdin is not None
        try:
            writer.stdin.write("BEGIN;\n")
            for line in _script(reader.stdout, manifest["schema"], target):
                writer.stdin.write(line)
            # COMMIT only once the whole script was read: a failed or cut-short
            # pg_restore leaves psql without it, and the transaction rolls back.
            if reader.wait() == 0:
                writer.stdin.write("COMMIT;\n")
        except BrokenPipeError:
            pass  # psql stopped at an error (and rolled back): reported below
        finally:
            reader.stdout.close()
            with contextlib.suppress(BrokenPipeError):
                writer.stdin.close()
        read_code, write_code = reader.wait(), writer.wait()
        if write_code != 0:
            errors.seek(0)
            raise BackupError(f"restore failed, nothing written: {_first_line(errors.read())}")
        if read_code != 0:
            read_errors.seek(0)
            raise BackupError(f"pg_restore failed: {_first_line(read_errors.read())}")
