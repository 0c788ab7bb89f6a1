"""`idledger dead-letters`: list the events the read models set aside, and retry them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from idledger.projections.engine import READ_MODELS
from idledger.projections.service import Projector, ReadModels
from idledger.replay.verb_support import StoreUrl, say, say_aside, show_table, store_environment

COLUMNS = ("read model", "position", "aggregate", "version", "topic", "error")
JSON_KEYS = ("read_model", "position", "aggregate", "version", "topic", "error")


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
    store_url: StoreUrl = None,
    wait_for_lock: Annotated[
        float, typer.Option(help="With --retry: seconds to wait for the runner lock.")
    ] = 0.0,
) -> None:
    """List the events a read model could not apply (position, aggregate, topic,
    error; never the event's values); exits 1 while any are left."""
    models = ReadModels(store_environment(store_url))
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
    projector.acquire(wait_for_lock)  # owned by a runner: exit 3
    try:
        for name, outcome in projector.retry_dead_letters().items():
            say_aside(f"{name}: {outcome.applied} applied, {outcome.still_held} still held")
    finally:
        projector.release()


def _show(models: ReadModels, as_json: bool) -> int:
    rows = [
        (name, letter.position, letter.originator_id, letter.originator_version, letter.topic,
         letter.error)
        for name in READ_MODELS
        for letter in models.followers[name].view.dead_letters()
    ]  # fmt: skip
    if as_json:
        for row in rows:
            say(json.dumps(dict(zip(JSON_KEYS, row, strict=True)), default=str))
    elif rows:
        show_table("Dead letters", COLUMNS, rows)
    else:
        say("no dead letters")
    return len(rows)
