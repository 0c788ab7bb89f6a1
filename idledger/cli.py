"""`idledger`: the one command-line entry point."""

from __future__ import annotations

import logging.config
import os
import secrets
import signal
import tempfile
import threading
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
import uvicorn
from rich.console import Console

from idledger.api.access_log import ENV_VAR as ACCESS_LOG_VAR
from idledger.api.console.settings import ConsoleSettings
from idledger.api.log_setup import LogSettingsError, logging_config
from idledger.api.metrics import metrics_enabled, worker_metrics_dir
from idledger.api.runtime import StoreUnreachable, check_store
from idledger.api.switches import switch
from idledger.demo import run_login_scenario
from idledger.domain.keystore import MasterKeyMissing
from idledger.domain.ledger import Ledger
from idledger.domain.user import User
from idledger.partitions import partition_suffix
from idledger.projections.engine import READ_MODELS
from idledger.projections.service import Projector, ReadModels
from idledger.replay.cli import read_model_names
from idledger.replay.cli import register as register_replay_verbs
from idledger.replay.partitions_cli import choose_partition, partition_urls
from idledger.replay.verb_support import (
    StoreUrl,
    Verbs,
    announce_new_sqlite_store,
    open_store_ledger,
    require_store,
    say,
    show_table,
)
from idledger.settings import Settings, SettingsError, open_ledger, store_env

app = typer.Typer(
    cls=Verbs, help="idledger: an event-sourced identity ledger.", no_args_is_help=True
)
console = Console()


@app.callback()
def main(
    debug: Annotated[  # noqa: ARG001  (Verbs reads it from the command line itself)
        bool,
        typer.Option(
            "--debug",
            envvar="IDLEDGER_DEBUG",
            help="On an error, show the traceback too (otherwise: one line on stderr).",
        ),
    ] = False,
    partition: Annotated[
        int | None,
        typer.Option(
            "--partition",
            min=0,
            help="Run the verb on this partition alone (IDLEDGER_PARTITIONS; 0 is the "
            "store itself). `idledger partitions` lists them.",
        ),
    ] = None,
) -> None:
    """idledger: an event-sourced identity ledger. Every verb takes --store-url
    (default: IDLEDGER_STORE_URL, else sqlite:///var/idledger.db)."""
    if partition is not None:
        choose_partition(partition)


@app.command()
def version() -> None:
    """Print the installed version."""
    say(f"idledger {package_version('idledger')}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    store_url: StoreUrl = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    access_log: Annotated[
        bool | None,
        typer.Option(
            help="Log every request (costs throughput; a proxy often logs). "
            "Default: IDLEDGER_ACCESS_LOG, else on.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (OneSignal-compatible User API plus idledger endpoints)."""
    try:  # IDLEDGER_LOG_LEVEL / IDLEDGER_LOG_FORMAT: for this process, uvicorn and every worker
        log_config = logging_config()
    except LogSettingsError as wrong:
        typer.echo(f"idledger serve: {wrong}", err=True)
        raise typer.Exit(2) from None
    logging.config.dictConfig(log_config)
    if store_url:
        os.environ["IDLEDGER_STORE_URL"] = store_url
    # Every setting is checked before anything is said or made: a bad one is one line
    # and exit 2 here (Verbs), not an error inside each worker once the store is made.
    url = Settings().store_url
    ConsoleSettings()
    metrics_enabled()
    if access_log is None:
        access_log = switch(ACCESS_LOG_VAR, default=True)
    env = store_env(url)  # an unknown kind of store URL
    announce_new_sqlite_store(url)  # serve makes its store: said, not silent
    if not os.environ.get("IDLEDGER_ADMIN_KEY"):
        os.environ["IDLEDGER_ADMIN_KEY"] = secrets.token_urlsafe(24)
        console.print(
            "IDLEDGER_ADMIN_KEY was not set; organization key for this run: "
            f"[bold]{os.environ['IDLEDGER_ADMIN_KEY']}[/bold]"
        )
    settings = Settings()  # with the organization key
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
    os.environ[ACCESS_LOG_VAR] = "1" if access_log else "0"
    with worker_metrics_dir(workers):  # several workers count into shared files
        uvicorn.run(
            "idledger.api.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_config=log_config,
        )


@app.command("new-key")
def new_key() -> None:
    """Print a fresh secret for IDLEDGER_INDEX_KEY or IDLEDGER_MASTER_KEY (PostgreSQL
    stores need both, the same in every process sharing the store)."""
    say(secrets.token_hex(32))


@app.command()
def demo(
    store_url: Annotated[
        str | None,
        typer.Option(
            help="Store to write the scenario into, made if it does not exist (default: a "
            "throw-away SQLite file; IDLEDGER_STORE_URL is not used, so that a demo never "
            "writes into the real store by accident)."
        ),
    ] = None,
) -> None:
    """Run OneSignal's documented login scenario and print the resulting users."""
    with tempfile.TemporaryDirectory() as scratch:
        throw_away = Settings(store_url=f"sqlite:///{Path(scratch) / 'demo.db'}")
        ledger = open_store_ledger(store_url, create=True) if store_url else open_ledger(throw_away)
        try:
            run = run_login_scenario(ledger)
            for number, step in enumerate(run.steps, 1):
                say(f"{number}. {step}")
            show_table("Users", ("onesignal_id", "external_id", "subscriptions", "state"),
                       _user_rows(ledger, run.users))  # fmt: skip
            show_table(f"Ownership of iOS push {run.app_subscription}",
                       ("owner", "from", "to", "cause"),
                       _timeline_rows(ledger, run.app_subscription))  # fmt: skip
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
    store_url: StoreUrl = None,
) -> None:
    """Bring the read models (of every partition) up to date with the log (once, or
    --follow: then a store outage is waited out and retried, and dead letters are
    retried first). Another runner owning a read model: exit 3 (or wait,
    --wait-for-lock)."""
    names = read_model_names(projection)
    urls = partition_urls(store_url)
    projectors: list[Projector] = []
    try:
        for url in urls:
            settings = require_store(url)
            models = ReadModels(store_env(settings.store_url), names, page_size)
            projectors.append(Projector(models, poll_interval))
        for projector in projectors:
            projector.acquire(wait_for_lock)  # owned by another runner: exit 3
        if follow:
            _follow_until_stopped(projectors, names, len(urls))
        applied = sum(projector.run_once() for projector in projectors)
        say(f"applied {applied} events")
        for number, projector in enumerate(projectors):
            models = projector.models
            for name, lag in models.lag().items():
                say(
                    f"{name}{partition_suffix(number)}: position "
                    f"{models.followers[name].view.position()}, "
                    f"{lag.events} events behind ({lag.seconds:.1f} s)"
                )
    finally:
        for projector in projectors:
            projector.release()
            projector.models.close()


def _follow_until_stopped(projectors: list[Projector], names: list[str], partitions: int) -> None:
    """Follow every partition's log, each in its own thread, until Ctrl-C or SIGTERM."""

    def stop(*_: object) -> None:
        for projector in projectors:
            projector.stop_following()

    signal.signal(signal.SIGTERM, stop)
    where = f" in {partitions} partitions" if partitions > 1 else ""
    say(f"following the log for {', '.join(names)}{where}; Ctrl-C to stop")
    for projector in projectors:
        projector.retry_dead_letters()
    followers = [
        threading.Thread(target=p.follow_until_stopped, name=f"projector-p{n}", daemon=True)
        for n, p in enumerate(projectors)
    ]
    for follower in followers:
        follower.start()
    try:
        for follower in followers:
            while follower.is_alive():
                follower.join(0.5)
    except KeyboardInterrupt:
        stop()
        for follower in followers:
            follower.join()


def _user_rows(ledger: Ledger, user_ids: list[UUID]) -> list[tuple[str, str, str, str]]:
    rows = []
    for user_id in user_ids:
        user = ledger.user_as_of(user_id, ledger.clock())
        assert isinstance(user, User)
        state = f"retired into {user.merged_into}" if user.merged_into else "live"
        subs = ", ".join(f"{kind}" for kind in user.subscriptions.values()) or "-"
        rows.append((str(user.id), user.external_id or "(anonymous)", subs, state))
    return rows


def _timeline_rows(ledger: Ledger, subscription_id: UUID) -> list[tuple[str, str, str, str]]:
    return [
        (str(interval.owner_id), interval.start.isoformat(),
         interval.end.isoformat() if interval.end else "now", interval.cause)
        for interval in ledger.ownership_timeline(subscription_id)
    ]  # fmt: skip


register_replay_verbs(app)
