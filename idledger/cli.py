"""`idledger`: the one command-line entry point."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from idledger.api.demo import run_login_scenario
from idledger.api.runtime import StoreUnreachable, check_store
from idledger.api.settings import Settings, SettingsError, open_ledger, store_env
from idledger.domain.keystore import MasterKeyMissing
from idledger.domain.ledger import Ledger
from idledger.domain.user import User
from idledger.projections.engine import READ_MODELS
from idledger.projections.lock import ProjectionBusy
from idledger.projections.service import Projector, ReadModels
from idledger.replay.cli import register as register_replay_verbs

app = typer.Typer(help="idledger: an event-sourced identity ledger.", no_args_is_help=True)
console = Console()


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(f"idledger {package_version('idledger')}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    store_url: Annotated[
        str | None, typer.Option(help="Store URL (default: IDLEDGER_STORE_URL or ./var SQLite).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (costs throughput; a proxy often logs).")
    ] = True,
) -> None:
    """Serve the HTTP API (OneSignal-compatible User API plus idledger endpoints)."""
    if store_url:
        os.environ["IDLEDGER_STORE_URL"] = store_url
    if not os.environ.get("IDLEDGER_ADMIN_KEY"):
        os.environ["IDLEDGER_ADMIN_KEY"] = secrets.token_urlsafe(24)
        console.print(
            "IDLEDGER_ADMIN_KEY was not set; organization key for this run: "
            f"[bold]{os.environ['IDLEDGER_ADMIN_KEY']}[/bold]"
        )
    settings = Settings()
    env = store_env(settings.store_url)  # fail fast, with a clear message, on a bad URL
    if workers > 1 and env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        console.print("[red]--workers > 1 needs PostgreSQL[/red]: SQLite is the one-process store")
        raise typer.Exit(2)
    try:
        check_store(settings)
    except StoreUnreachable as unreachable:
        console.print(f"[red]idledger serve: {unreachable}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    except (SettingsError, MasterKeyMissing) as wrong:
        console.print(f"[red]idledger serve: {wrong}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"idledger on http://{host}:{port} (store {settings.store_url}); docs at /docs")
    # Our access log (api/access_log.py) replaces uvicorn's, which prints raw paths;
    # the environment carries the choice to the app factory in every worker process.
    os.environ["IDLEDGER_ACCESS_LOG"] = "1" if access_log else "0"
    uvicorn.run(
        "idledger.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
    )


@app.command("new-key")
def new_key() -> None:
    """Print a fresh secret for IDLEDGER_INDEX_KEY or IDLEDGER_MASTER_KEY (PostgreSQL
    stores need both, the same in every process sharing the store)."""
    console.print(secrets.token_hex(32))


@app.command()
def demo(
    store_url: Annotated[
        str | None,
        typer.Option(help="Store to write the scenario into (default: a throw-away SQLite)."),
    ] = None,
) -> None:
    """Run OneSignal's documented login scenario and print the resulting users."""
    with tempfile.TemporaryDirectory() as scratch:
        url = store_url or f"sqlite:///{Path(scratch) / 'demo.db'}"
        ledger = open_ledger(Settings(store_url=url))
        try:
            run = run_login_scenario(ledger)
            for number, step in enumerate(run.steps, 1):
                console.print(f"{number}. {step}")
            console.print(_users_table(ledger, run.users))
            console.print(_timeline_table(ledger, run.app_subscription))
        finally:
            ledger.close()


@app.command()
def project(
    follow: Annotated[bool, typer.Option(help="Keep following the log until stopped.")] = False,
    projection: Annotated[
        list[str] | None,
        typer.Option(help=f"Read model(s) to run: {', '.join(READ_MODELS)} (default: all)."),
    ] = None,
    wait_for_lock: Annotated[
        float, typer.Option(help="Seconds to wait if another runner owns a read model.")
    ] = 0.0,
    page_size: Annotated[int, typer.Option(min=1, help="Events per transaction.")] = 1000,
    poll_interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 0.5,
) -> None:
    """Bring the read models up to date with the log (once, or --follow: then a
    store outage is waited out and retried, and dead letters are retried first)."""
    names = projection or list(READ_MODELS)
    unknown = sorted(set(names) - set(READ_MODELS))
    if unknown:
        raise typer.BadParameter(
            f"unknown read model(s) {unknown}; choose from {list(READ_MODELS)}"
        )
    models = ReadModels(store_env(Settings().store_url), names, page_size)
    projector = Projector(models, poll_interval)
    try:
        projector.acquire(wait_for_lock)
    except ProjectionBusy as busy:
        console.print(f"[red]{busy}[/red]")
        raise typer.Exit(3) from None
    try:
        if follow:
            signal.signal(signal.SIGTERM, lambda *_: projector.stop_following())
            console.print(f"following the log for {', '.join(names)}; Ctrl-C to stop")
            projector.retry_dead_letters()
            with contextlib.suppress(KeyboardInterrupt):
                projector.follow_until_stopped()
        applied = projector.run_once()
        console.print(f"applied {applied} events")
        for name, lag in models.lag().items():
            console.print(
                f"{name}: position {models.followers[name].view.position()}, "
                f"{lag.events} events behind ({lag.seconds:.1f} s)"
            )
    finally:
        projector.release()
        models.close()


def _users_table(ledger: Ledger, user_ids: list[UUID]) -> Table:
    table = Table(title="Users")
    for column in ("onesignal_id", "external_id", "subscriptions", "state"):
        table.add_column(column)
    for user_id in user_ids:
        user = ledger.user_as_of(user_id, ledger.clock())
        assert isinstance(user, User)
        state = f"retired into {user.merged_into}" if user.merged_into else "live"
        subs = ", ".join(f"{kind}" for kind in user.subscriptions.values()) or "-"
        table.add_row(str(user.id), user.external_id or "(anonymous)", subs, state)
    return table


def _timeline_table(ledger: Ledger, subscription_id: UUID) -> Table:
    table = Table(title=f"Ownership of iOS push {subscription_id}")
    for column in ("owner", "from", "to", "cause"):
        table.add_column(column)
    for interval in ledger.ownership_timeline(subscription_id):
        end = interval.end.isoformat() if interval.end else "now"
        table.add_row(str(interval.owner_id), interval.start.isoformat(), end, interval.cause)
    return table


register_replay_verbs(app)
