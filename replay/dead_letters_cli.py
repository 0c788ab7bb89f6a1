"""`idledger dead-letters`: list the events the read models set aside, and retry them."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from idledger.api.settings import Settings, store_env
from idledger.projections.engine import READ_MODELS
from idledger.projections.lock import ProjectionBusy
from idledger.projections.service import Projector, ReadModels

console = Console()
errors = Console(stderr=True)


def dead_letters_command(
    retry: Annotated[
        bool,
        typer.Option(
            "--retry",
            help="Apply them again (after a fix); needs the read models' runner lock, so "
            "stop the projector first (a projector also retries them when it starts).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    store_url: Annotated[
        str | None, typer.Option(help="Store URL (default: IDLEDGER_STORE_URL or ./var SQLite).")
    ] = None,
    wait_for_lock: Annotated[
        float, typer.Option(help="With --retry: seconds to wait for the runner lock.")
    ] = 0.0,
) -> None:
    """List the events a read model could not apply (position, aggregate, topic,
    error; never the event's values); exits 1 while any are left."""
    models = ReadModels(store_env(store_url or Settings().store_url))
    try:
        if retry:
            _retry(models, wait_for_lock)
        left = _show(models, as_json)
    finally:
        models.close()
    if left:
        raise typer.Exit(1)


def _retry(models: ReadModels, wait_for_lock: float) -> None:
    projector = Projector(models)
    try:
        projector.acquire(wait_for_lock)
    except ProjectionBusy as busy:
        errors.print(f"[red]{busy}[/red]")
        raise typer.Exit(3) from None
    try:
        for name, outcome in projector.retry_dead_letters().items():
            errors.print(f"{name}: {outcome.applied} applied, {outcome.still_held} still held")
    finally:
        projector.release()


def _show(models: ReadModels, as_json: bool) -> int:
    table = Table(title="Dead letters")
    for column in ("read model", "position", "aggregate", "version", "topic", "error"):
        table.add_column(column)
    count = 0
    for name in READ_MODELS:
        for letter in models.followers[name].view.dead_letters():
            count += 1
            row = (name, letter.position, letter.originator_id, letter.originator_version,
                   letter.topic, letter.error)  # fmt: skip
            if as_json:
                print(json.dumps(dict(zip(("read_model", "position", "aggregate", "version",
                                           "topic", "error"), row, strict=True))))  # fmt: skip
            else:
                table.add_row(*(str(value) for value in row))
    if not as_json:
        console.print(table if count else "no dead letters")
    return count
