"""`idledger backup` and `idledger restore`: one clear line and exit 1 on any error."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated, NoReturn

import psycopg
import typer

from idledger.replay.backup import BackupError, backup, restore
from idledger.replay.verb_support import STORE_URL_HELP, StoreUrl, require_store


def _fail(verb: str, message: object) -> NoReturn:
    typer.echo(f"idledger {verb}: {message}", err=True)
    raise typer.Exit(1)


def backup_command(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory for the backup.")],
    with_master_key: Annotated[
        bool,
        typer.Option(
            help="Also copy the master key (README, Privacy: keep it apart from backups). "
            "Without it, a restore needs IDLEDGER_MASTER_KEY set to the same key."
        ),
    ] = False,
    store_url: StoreUrl = None,
) -> None:
    """Copy the store, consistently, while it serves (SQLite: online backup API;
    PostgreSQL: pg_dump), with a manifest of positions, sizes and SHA-256s."""
    settings = require_store(store_url)
    try:
        result = backup(settings.store_url, dest, with_master_key=with_master_key)
    except (BackupError, OSError, sqlite3.Error, psycopg.Error) as error:
        _fail("backup", error)
    manifest = result.manifest
    behind = ", ".join(f"{name} {at}" for name, at in manifest["read_models"].items())
    typer.echo(
        f"backed up {manifest['store']} store to {dest} at log position "
        f"{manifest['log_position']} (read models: {behind or 'none'}); "
        + ("master key included" if manifest["master_key_included"] else "master key NOT included")
    )


def restore_command(
    source: Annotated[Path, typer.Argument(help="A directory written by `idledger backup`.")],
    store_url: Annotated[
        str | None,
        typer.Option(
            envvar="IDLEDGER_STORE_URL",
            show_envvar=True,
            help="The new store to create (it must not exist). " + STORE_URL_HELP,
        ),
    ] = None,
) -> None:
    """Verify a backup (every file, size and SHA-256), then restore it as a new store
    (a SQLite file and its folder, or a PostgreSQL schema); never over a store."""
    if not store_url:
        _fail("restore", "name the new store: --store-url or IDLEDGER_STORE_URL")
    try:
        result = restore(source, store_url)
    except (BackupError, OSError, sqlite3.Error, psycopg.Error) as error:
        _fail("restore", error)
    typer.echo(
        f"restored {result.manifest['store']} backup to {store_url} at log position "
        f"{result.manifest['log_position']}; run `idledger project` to bring its read models "
        "up to the log"
        + (
            ""
            if result.manifest["master_key_included"] or result.manifest["store"] != "sqlite"
            else "; it has no master key file: always run it with this IDLEDGER_MASTER_KEY"
        )
    )
