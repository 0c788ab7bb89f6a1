"""The operator's verbs: replay, verify, audit, export, import, import-csv."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from idledger.api.settings import Settings, store_env
from idledger.domain.errors import LedgerError
from idledger.domain.service import LedgerLog
from idledger.projections.engine import READ_MODELS
from idledger.projections.lock import ProjectionBusy
from idledger.replay.audit import audit_subscription, audit_user, event_json
from idledger.replay.backup_cli import backup_command, restore_command
from idledger.replay.csv_cli import import_csv_command
from idledger.replay.dead_letters_cli import dead_letters_command
from idledger.replay.privacy_cli import erase_command, seal_command
from idledger.replay.rebuild import rebuild, swap_in, verify
from idledger.replay.transfer import ImportRefused, export_lines, import_events

T = TypeVar("T")
console = Console()
errors = Console(stderr=True)
StoreUrl = Annotated[
    str | None, typer.Option(help="Store URL (default: IDLEDGER_STORE_URL or ./var SQLite).")
]
At = Annotated[datetime | None, typer.Option(help="An instant, ISO 8601 (UTC if no zone).")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class Into(StrEnum):
    FRESH = "fresh"
    LIVE = "live"


def _env(store_url: str | None) -> dict[str, str]:
    return store_env(store_url or Settings().store_url)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


def _names(projection: list[str] | None) -> list[str]:
    names = list(READ_MODELS) if not projection or projection == ["all"] else projection
    unknown = sorted(set(names) - set(READ_MODELS))
    if unknown:
        raise typer.BadParameter(
            f"unknown read model(s) {unknown}; choose from {list(READ_MODELS)}"
        )
    return names


def replay(
    projection: Annotated[list[str] | None, typer.Option(help="Read model(s), or all.")] = None,
    until: At = None,
    into: Annotated[
        Into, typer.Option(help="fresh: beside the live ones; live: swap in.")
    ] = Into.FRESH,
    jobs: Annotated[
        int, typer.Option(min=1, help="Processes to share the read models among (one per core).")
    ] = 1,
    store_url: StoreUrl = None,
) -> None:
    """Rebuild read models from the log alone (at an instant, with --until)."""
    names, env, until = _names(projection), _env(store_url), _aware(until)
    if until is not None and into is Into.LIVE:
        errors.print("--until builds a view of the past; it cannot replace the live read models")
        raise typer.Exit(2)
    log = LedgerLog(env)
    total = log.recorder.max_notification_id() or 0
    log.close()
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.speed} ev/s"), TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=errors, transient=False) as bar:
        task = bar.add_task(", ".join(names), total=total)
        reports = rebuild(
            env, names, until=until, jobs=jobs, progress=lambda n: bar.advance(task, n)
        )
    table = Table(
        title=f"replayed {total} events" + (f" until {until.isoformat()}" if until else "")
    )
    for column in ("read model", "events", "events/s", "position", "where"):
        table.add_column(column)
    for report in reports:
        rate = report.events / report.seconds if report.seconds else 0
        where = "beside the live one (_rebuild)"
        if into is Into.LIVE:
            try:
                swap_in(env, report.name)
            except ProjectionBusy as busy:
                errors.print(f"[red]{busy}[/red]: stop it, then run again")
                raise typer.Exit(3) from None
            where = "swapped in (live)"
        table.add_row(report.name, str(report.events), f"{rate:,.0f}", str(report.position), where)
    console.print(table)


def verify_command(
    projection: Annotated[list[str] | None, typer.Option(help="Read model(s), or all.")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Rebuild into scratch tables and compare with the live read models row by row."""
    differences = verify(_env(store_url), _names(projection))
    different = False
    for name, difference in differences.items():
        if difference.identical:
            console.print(f"{name}: identical")
            continue
        different = True
        for side, rows in (
            ("only live", difference.only_live),
            ("only rebuilt", difference.only_rebuilt),
        ):
            for table, extra in rows.items():
                for row in extra[:20]:
                    console.print(f"{name}.{table} {side}: {row}")
                if len(extra) > 20:
                    console.print(f"{name}.{table} {side}: ... {len(extra) - 20} more")
    if different:
        raise typer.Exit(1)


def _from_log(store_url: str | None, question: Callable[[LedgerLog], T]) -> T:
    """Ask the log a question; a ledger error (not found) exits 1 with its message."""
    log = LedgerLog(_env(store_url))
    try:
        return question(log)
    except LedgerError as error:
        errors.print(str(error))
        raise typer.Exit(1) from None
    finally:
        log.close()


audit = typer.Typer(help="Look at the past: ownership of a subscription, a user as of an instant.")


@audit.command("subscription")
def audit_subscription_command(
    subscription_id: UUID, at: At = None, as_json: AsJson = False, store_url: StoreUrl = None
) -> None:
    """The ownership timeline with causes, or the owner at --at."""
    result = _from_log(store_url, lambda log: audit_subscription(log, subscription_id, _aware(at)))
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
        return
    if result.at is not None:
        console.print(f"owner at {result.at.isoformat()}: {result.owner_id or 'nobody'}")
    table = Table(title=f"ownership of {subscription_id}")
    for column in ("owner", "from", "to", "cause", "ended by"):
        table.add_column(column)
    for i in result.timeline:
        end = i.end.isoformat() if i.end else "now"
        table.add_row(str(i.owner_id), i.start.isoformat(), end, str(i.cause), i.ended_by or "")
    console.print(table)


@audit.command("user")
def audit_user_command(
    user_id: UUID, at: At = None, as_json: AsJson = False, store_url: StoreUrl = None
) -> None:
    """The user as of --at (default: now) and its event history."""
    result = _from_log(store_url, lambda log: audit_user(log, user_id, _aware(at)))
    if as_json:
        print(json.dumps(result.as_json(), indent=2, default=str))
        return
    state = result.as_json()["state"]
    console.print(f"user {user_id}" + (f" as of {result.at.isoformat()}" if result.at else ""))
    console.print(state if state is not None else "did not exist yet")
    if result.survivor_id != user_id:
        console.print(f"retired into {result.survivor_id}")
    table = Table(title="events")
    for column in ("version", "time", "event", "actor", "data"):
        table.add_column(column)
    for event in result.events:
        data = {
            k: v
            for k, v in event_json(event).items()
            if k not in ("version", "type", "timestamp", "actor", "schema_version")
        }
        table.add_row(str(event.originator_version), event.timestamp.isoformat(), event.TOPIC,
                      event.actor, json.dumps(data, default=str))  # fmt: skip
    console.print(table)


def export(
    app: Annotated[UUID | None, typer.Option(help="Only this app's aggregates.")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Write the ledger's events to standard output, one JSON object per line,
    between a header line and a trailer line (count, last position, SHA-256)."""
    from idledger.api.settings import resolve_index_key

    env = _env(store_url)
    index_key = resolve_index_key(Settings(), env)
    log = LedgerLog(env)
    try:
        for line in export_lines(log, app, index_key=index_key):
            sys.stdout.write(line + "\n")
    finally:
        log.close()


def import_command(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="events.jsonl")],
    append: Annotated[bool, typer.Option(help="Add to a store that already has events.")] = False,
    keys_from: Annotated[
        str | None,
        typer.Option(
            help="Store URL of the ledger the export came from: its data keys (as they are "
            "now: erased people stay erased) are copied with the events. Without it the "
            "imported personal values cannot be read. Both stores need the same "
            "IDLEDGER_MASTER_KEY."
        ),
    ] = None,
    legacy: Annotated[
        bool,
        typer.Option(help="Accept an export of the previous release (no header: no digest)."),
    ] = False,
    store_url: StoreUrl = None,
) -> None:
    """Import an export into an empty store: all events or, on bad input, none."""
    from idledger.api.settings import SettingsError, resolve_index_key

    env = _env(store_url)
    log = LedgerLog(env)
    source_log = LedgerLog(_env(keys_from)) if keys_from else None
    try:
        index_key = resolve_index_key(Settings(), env)
        with source.open(encoding="utf-8") as lines:
            imported = import_events(
                log, lines, index_key=index_key, append=append, keys_from=source_log, legacy=legacy
            )
    except (ImportRefused, SettingsError) as refused:
        errors.print(f"[red]import refused[/red]: {refused}")
        raise typer.Exit(1) from None
    finally:
        log.close()
        if source_log is not None:
            source_log.close()
    console.print(
        f"imported {imported.events} events "
        f"(positions {imported.first_position}..{imported.last_position})"
    )


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("verify")(verify_command)
    app.add_typer(audit, name="audit")
    app.command("export")(export)
    app.command("import")(import_command)
    app.command("import-csv")(import_csv_command)
    app.command("dead-letters")(dead_letters_command)
    app.command("erase")(erase_command)
    app.command("seal")(seal_command)
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
