"""The operator's verbs: replay, verify, audit, export, import, and the others'
registration (import-csv, dead-letters, erase, seal, backup, restore, apps)."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from idledger.partitions import partition_suffix
from idledger.projections.engine import READ_MODELS
from idledger.projections.service import ReadModels
from idledger.replay.apps_cli import apps
from idledger.replay.audit import audit_subscription, audit_user, event_json
from idledger.replay.backup_cli import backup_command, restore_command
from idledger.replay.csv_cli import import_csv_command
from idledger.replay.dead_letters_cli import dead_letters_command
from idledger.replay.partitioned_rebuild import rebuild_partitions
from idledger.replay.partitions_cli import app_store_url, partition_urls, partitions_command
from idledger.replay.privacy_cli import erase_command, seal_command
from idledger.replay.rebuild import swap_in, verify
from idledger.replay.transfer import (
    HEADER,
    ImportRefused,
    check_import,
    export_lines,
    write_import,
)
from idledger.replay.verb_support import (
    StoreUrl,
    Verbs,
    fail,
    opened_log,
    prepare_store,
    progress,
    refuse_if_projected,
    say,
    say_new_store,
    show_table,
    store_environment,
)
from idledger.settings import Settings, resolve_index_key, store_env

At = Annotated[datetime | None, typer.Option(help="An instant, ISO 8601 (UTC if no zone).")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
EXPORT_FRAME = f'{{"{HEADER}'  # how the header and the trailer lines start
Projections = Annotated[
    list[str] | None,
    typer.Option(help=f"Read model(s): {', '.join(READ_MODELS)}, or all (the default)."),
]


class Into(StrEnum):
    FRESH = "fresh"
    LIVE = "live"


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment


def read_model_names(projection: list[str] | None) -> list[str]:
    names = list(READ_MODELS) if not projection or projection == ["all"] else projection
    unknown = sorted(set(names) - set(READ_MODELS))
    if unknown:
        raise typer.BadParameter(
            f"unknown read model(s) {unknown}; choose from {list(READ_MODELS)}"
        )
    return names


def replay(
    projection: Projections = None,
    until: At = None,
    into: Annotated[
        Into, typer.Option(help="fresh: beside the live ones; live: swap in.")
    ] = Into.FRESH,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes to share the read models (with partitions: the partitions) "
            "among (one per core).",
        ),
    ] = 1,
    store_url: StoreUrl = None,
) -> None:
    """Rebuild read models from the log alone (at an instant, with --until)."""
    names, until = read_model_names(projection), _aware(until)
    if until is not None and into is Into.LIVE:
        fail("--until builds a view of the past; it cannot replace the live read models", 2)
    urls = partition_urls(store_url)
    envs = [store_environment(url) for url in urls]
    if into is Into.LIVE:
        for env in envs:
            refuse_if_projected(env, names)  # before the work, not after it
    heads = []
    for env in envs:
        with opened_log(env) as log:
            heads.append(log.recorder.max_notification_id() or 0)
    what = ", ".join(names) + (f" of {len(envs)} partitions" if len(envs) > 1 else "")
    with progress(what, sum(heads)) as advance:
        partitions = rebuild_partitions(
            envs, names, heads, until=until, jobs=jobs, progress=advance
        )
    rows = []
    for number, (env, reports) in enumerate(zip(envs, partitions, strict=True)):
        for report in reports:
            rate = report.events / report.seconds if report.seconds else 0
            where = "beside the live one (_rebuild)"
            if into is Into.LIVE:
                swap_in(env, report.name)  # a runner started meanwhile: refused, exit 3
                where = "swapped in (live)"
            name = report.name + partition_suffix(number)
            rows.append((name, report.events, f"{rate:.0f}", report.position, where))
    total = sum(heads)
    title = f"replayed {total} events" + (f" until {until.isoformat()}" if until else "")
    show_table(title, ("read model", "events", "events/s", "position", "where"), rows)


def verify_command(projection: Projections = None, store_url: StoreUrl = None) -> None:
    """Rebuild into scratch tables and compare with the live read models row by row
    (exit 1 on any difference)."""
    names = read_model_names(projection)
    envs = [store_environment(url) for url in partition_urls(store_url)]
    total = 0
    for env in envs:
        models = ReadModels(env, names)
        try:  # each is rebuilt up to the live one's position
            total += sum(follower.view.position() for follower in models.followers.values())
        finally:
            models.close()
    different = False
    with progress(f"verifying {', '.join(names)}", total) as advance:
        differences = {
            name + partition_suffix(number): difference
            for number, env in enumerate(envs)
            for name, difference in verify(env, names, progress=advance).items()
        }
    for name, difference in differences.items():
        if difference.identical:
            say(f"{name}: identical")
            continue
        different = True
        for side, rows in (
            ("only live", difference.only_live),
            ("only rebuilt", difference.only_rebuilt),
        ):
            for table, extra in rows.items():
                for row in extra[:20]:
                    say(f"{name}.{table} {side}: {row}")
                if len(extra) > 20:
                    say(f"{name}.{table} {side}: ... {len(extra) - 20} more")
    if different:
        raise typer.Exit(1)


audit = typer.Typer(
    cls=Verbs, help="Look at the past: ownership of a subscription, a user as of an instant."
)


@audit.command("subscription")
def audit_subscription_command(
    subscription_id: UUID, at: At = None, as_json: AsJson = False, store_url: StoreUrl = None
) -> None:
    """The ownership timeline with causes, or the owner at --at."""
    with opened_log(store_environment(store_url)) as log:
        result = audit_subscription(log, subscription_id, _aware(at))
    if as_json:
        say(json.dumps(result.as_json(), indent=2))
        return
    if result.at is not None:
        say(f"owner at {result.at.isoformat()}: {result.owner_id or 'nobody'}")
    rows = [
        (i.owner_id, i.start.isoformat(), i.end.isoformat() if i.end else "now", i.cause,
         i.ended_by or "")
        for i in result.timeline
    ]  # fmt: skip
    show_table(
        f"ownership of {subscription_id}", ("owner", "from", "to", "cause", "ended by"), rows
    )


@audit.command("user")
def audit_user_command(
    user_id: UUID, at: At = None, as_json: AsJson = False, store_url: StoreUrl = None
) -> None:
    """The user as of --at (default: now) and its event history."""
    with opened_log(store_environment(store_url)) as log:
        result = audit_user(log, user_id, _aware(at))
    if as_json:
        say(json.dumps(result.as_json(), indent=2, default=str))
        return
    state = result.as_json()["state"]
    say(f"user {user_id}" + (f" as of {result.at.isoformat()}" if result.at else ""))
    say(json.dumps(state, default=str) if state is not None else "did not exist yet")
    if result.survivor_id != user_id:
        say(f"retired into {result.survivor_id}")
    hidden = ("version", "type", "timestamp", "actor", "schema_version")
    rows = [
        (event.originator_version, event.timestamp.isoformat(), event.TOPIC, event.actor,
         json.dumps({k: v for k, v in event_json(event).items() if k not in hidden}, default=str))
        for event in result.events
    ]  # fmt: skip
    show_table("events", ("version", "time", "event", "actor", "data"), rows)


def export(
    app: Annotated[UUID | None, typer.Option(help="Only this app's aggregates.")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Write the ledger's events to standard output, one JSON object per line,
    between a header line and a trailer line (count, last position, SHA-256). With
    partitions: partition 0's, or with --app that app's partition's."""
    env = store_environment(app_store_url(store_url, app) if app else store_url)
    index_key = resolve_index_key(Settings(), env)
    with opened_log(env) as log:
        # With --app the log is read whole but only the app's lines count: no total.
        total = None if app else log.recorder.max_notification_id() or 0
        with progress("export", total, data_on_stdout=True) as advance:
            for line in export_lines(log, app, index_key=index_key):
                sys.stdout.write(line + "\n")
                if not line.startswith(EXPORT_FRAME):  # the header and trailer are no events
                    advance(1)
        sys.stdout.flush()


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
    """Import an export into an empty store (made if it does not exist): all events
    or, on bad input, none."""
    settings, new = prepare_store(store_url, create=not append)
    env = store_env(settings.store_url)
    source_env = store_environment(keys_from) if keys_from else None
    with source.open("rb") as counting:
        events_in_file = sum(1 for _ in counting) - (0 if legacy else 2)  # header, trailer
    try:
        with ExitStack() as stack:
            log = stack.enter_context(opened_log(env))
            source_log = stack.enter_context(opened_log(source_env)) if source_env else None
            lines = stack.enter_context(source.open(encoding="utf-8"))
            # Every line is checked before one is written; then one transaction writes them.
            with progress("import: checking", max(events_in_file, 0), unit="lines") as advance:
                checked = check_import(
                    log, lines, index_key=resolve_index_key(Settings(), env), append=append,
                    legacy=legacy, progress=advance,
                )  # fmt: skip
            with progress("import: writing", len(checked.events)) as advance:
                imported = write_import(
                    log, checked, append=append, keys_from=source_log, progress=advance
                )
    except ImportRefused as refused:
        fail(f"refused: {refused}")
    except UnicodeDecodeError:
        fail(f"refused: {source} is not UTF-8: is it an export?")
    if new:
        say_new_store(settings.store_url)
    say(
        f"imported {imported.events} events "
        f"(positions {imported.first_position}..{imported.last_position})"
    )


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("verify")(verify_command)
    app.add_typer(audit, name="audit")
    app.command("export")(export)
    app.command("partitions")(partitions_command)
    app.command("import")(import_command)
    app.command("import-csv")(import_csv_command)
    app.command("dead-letters")(dead_letters_command)
    app.command("erase")(erase_command)
    app.command("seal")(seal_command)
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
    app.add_typer(apps, name="apps")
