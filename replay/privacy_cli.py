"""`idledger erase` (forget a person) and `idledger seal` (seal a store written
before personal values were sealed)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from idledger.replay.seal import seal_store
from idledger.replay.verb_support import (
    StoreUrl,
    open_store_ledger,
    opened_log,
    progress,
    say,
    store_environment,
)


def erase_command(
    app: Annotated[UUID, typer.Option(help="The app's id.")],
    user: Annotated[UUID, typer.Option(help="The user's onesignal_id (live, deleted or merged).")],
    store_url: StoreUrl = None,
) -> None:
    """Forget a person: delete the user and destroy the data keys of the user and of
    the subscriptions it held, in one transaction with an Erased event. Its personal
    values become unreadable in the log, snapshots, exports and backups; ids,
    times, causes and counts stay. Read models drop them when they apply the event."""
    ledger = open_store_ledger(store_url)
    try:
        erasure = ledger.erase_user(app, user)  # not found: one line, exit 1
    finally:
        ledger.close()
    if erasure.already:
        say(f"user {user} was already erased; nothing to do")
        return
    say(
        f"erased user {user} and {len(erasure.subscriptions)} subscription(s) "
        f"(log position {erasure.position}); their data keys are destroyed"
    )


def seal_command(store_url: StoreUrl = None) -> None:
    """Seal the personal values of events written before they were sealed (the
    format of releases before 0.2), in place, page by page; run again to resume."""
    with opened_log(store_environment(store_url)) as log:
        total = log.recorder.max_notification_id() or 0
        with progress("seal", total) as advance:
            outcome = seal_store(log, progress=advance)
    say(
        f"examined {outcome.examined} events, sealed {outcome.sealed}; "
        f"dropped {outcome.snapshots_dropped} snapshots (taken again as aggregates grow)"
    )
