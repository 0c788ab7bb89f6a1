"""`idledger erase` (forget a person) and `idledger seal` (seal a store written
before personal values were sealed)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console

from idledger.api.settings import Settings, open_ledger, store_env
from idledger.domain.errors import NotFound
from idledger.domain.service import LedgerLog
from idledger.replay.seal import seal_store

console = Console()
errors = Console(stderr=True)
StoreUrl = Annotated[
    str | None, typer.Option(help="Store URL (default: IDLEDGER_STORE_URL or ./var SQLite).")
]


def erase_command(
    app: Annotated[UUID, typer.Option(help="The app's id.")],
    user: Annotated[UUID, typer.Option(help="The user's onesignal_id (live, deleted or merged).")],
    store_url: StoreUrl = None,
) -> None:
    """Forget a person: delete the user and destroy the data keys of the user and of
    the subscriptions it held, in one transaction with an Erased event. Its personal
    values become unreadable in the log, snapshots, exports and backups; ids,
    times, causes and counts stay. Read models drop them when they apply the event."""
    settings = Settings(store_url=store_url) if store_url else Settings()
    ledger = open_ledger(settings)
    try:
        erasure = ledger.erase_user(app, user)
    except NotFound as missing:
        errors.print(f"[red]idledger erase[/red]: {missing.message}")
        raise typer.Exit(1) from None
    finally:
        ledger.close()
    if erasure.already:
        console.print(f"user {user} was already erased; nothing to do")
        return
    console.print(
        f"erased user {user} and {len(erasure.subscriptions)} subscription(s) "
        f"(log position {erasure.position}); their data keys are destroyed"
    )


def seal_command(store_url: StoreUrl = None) -> None:
    """Seal the personal values of events written before they were sealed (the
    format of releases before 0.2), in place, page by page; run again to resume."""
    log = LedgerLog(_env(store_url))
    try:
        outcome = seal_store(log)
    finally:
        log.close()
    console.print(
        f"examined {outcome.examined} events, sealed {outcome.sealed}; "
        f"dropped {outcome.snapshots_dropped} snapshots (taken again as aggregates grow)"
    )


def _env(store_url: str | None) -> dict[str, str]:
    return store_env(store_url or Settings().store_url)
