"""What every `idledger` verb shares: the store option, opening a store with clear
errors, the runner-lock refusal, progress on standard error, and output that suits
a terminal (rich tables) or a pipe (whole values, tab-separated).

Errors: a verb raises; ``Verbs`` (the command group) turns any exception into one
line on standard error and a non-zero exit code, never a traceback unless
``--debug`` (or ``IDLEDGER_DEBUG=1``) asks for it. Exit codes: 1 a failure (store
unreachable, not found, refused), 2 bad settings or a store that does not exist,
3 a read model owned by another runner."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from psycopg import sql
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from idledger.api.switches import SwitchError
from idledger.domain.errors import LedgerError
from idledger.domain.keystore import MasterKeyMissing
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.projections.dead_letters import describe, is_store_failure
from idledger.projections.engine import view_env
from idledger.projections.lock import ProjectionBusy, RunnerLock, postgres_conninfo
from idledger.settings import Settings, SettingsError, open_ledger, sqlite_file, store_env

STORE_URL_HELP = (
    "The store: sqlite:///path.db or postgresql://user:pw@host:port/db?schema=name "
    "(default: sqlite:///var/idledger.db)."
)
StoreUrl = Annotated[
    str | None,
    typer.Option("--store-url", envvar="IDLEDGER_STORE_URL", show_envvar=True, help=STORE_URL_HELP),
]
EVENTS_TABLE = "idledger_events"  # LedgerLog.name + "_events", on PostgreSQL
BROKEN_PIPE_EXIT = 141  # as a shell reports a process ended by SIGPIPE
_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s]*@")
_store_in_use: ContextVar[str | None] = ContextVar("idledger_store_in_use", default=None)


class VerbFailed(Exception):
    """What a verb reports on purpose: one line and an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class StoreMissing(VerbFailed):
    """The store named does not exist (a mistyped path?) and the verb does not create one."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


# Errors -------------------------------------------------------------------------


def redacted(text: str) -> str:
    """``text`` without the password of any URL in it."""
    return _PASSWORD.sub(r"\1***@", text)


def explain(error: Exception) -> tuple[str, int]:
    """One line for the person at the terminal, and the exit code."""
    if isinstance(error, VerbFailed):
        return error.message, error.exit_code
    if isinstance(error, SettingsError | MasterKeyMissing | SwitchError):
        return str(error), 2
    if isinstance(error, ValidationError):
        return _bad_settings(error), 2
    if isinstance(error, ProjectionBusy):
        return f"{error}: stop it (or wait for it with --wait-for-lock) and run again", 3
    if isinstance(error, LedgerError):
        return error.message, 1
    if is_store_failure(error):
        where = _current_store()
        return f"the store{f' ({where})' if where else ''} did not answer: {describe(error)}", 1
    if isinstance(error, psycopg.Error):
        return f"the store refused: {describe(error)}", 1
    if isinstance(error, OSError):
        name = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or describe(error)}{name}", 1
    return f"unexpected error: {describe(error)} (run with --debug for the traceback)", 1


def _bad_settings(error: ValidationError) -> str:
    prefix = _env_prefix(error.title)
    problems = [
        f"{prefix}{'_'.join(str(part) for part in problem['loc']).upper()}: {problem['msg']}"
        for problem in error.errors(include_input=False, include_url=False)
    ]
    return "bad setting " + "; ".join(problems)


def _env_prefix(model_name: str) -> str:
    """The variables' prefix of the settings model that failed, by its name (the
    error's title): ``IDLEDGER_``, ``IDLEDGER_CONSOLE_``..."""
    pending: list[type[BaseSettings]] = list(BaseSettings.__subclasses__())
    while pending:
        model = pending.pop()
        if model.__name__ == model_name:
            return str(model.model_config.get("env_prefix") or "")
        pending += model.__subclasses__()
    return "IDLEDGER_"


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise VerbFailed(message, exit_code)


class Verbs(TyperGroup):
    """The `idledger` command group: every verb's exception becomes one line."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's vendored click Context
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # usage errors and exits: typer reports them itself
        except BrokenPipeError:
            # The reader of our output went away (`| head`): nothing to say to anyone.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(BROKEN_PIPE_EXIT) from None
        except Exception as error:
            if ctx.find_root().params.get("debug"):
                raise
            message, code = explain(error)
            # "idledger apps show": the root's own name varies (a test runner's, python -m).
            verb = " ".join(["idledger", *ctx.command_path.split()[1:], ctx.invoked_subcommand])
            typer.echo(f"{verb}: {redacted(message)}", err=True)
            raise typer.Exit(code) from None


# Opening the store ---------------------------------------------------------------


def settings_for(store_url: str | None) -> Settings:
    """The settings, with ``store_url`` (from --store-url or IDLEDGER_STORE_URL) if given."""
    return Settings(store_url=store_url) if store_url else Settings()


def require_store(store_url: str | None, *, create: bool = False) -> Settings:
    """The settings of a store that exists. With ``create``, a missing store is made
    and announced on standard error (SQLite: the file and its folder; PostgreSQL:
    the schema); without it, a missing one is refused (``StoreMissing``)."""
    settings, new = prepare_store(store_url, create=create)
    if new:
        say_new_store(settings.store_url)
    return settings


def prepare_store(store_url: str | None, *, create: bool) -> tuple[Settings, bool]:
    """``require_store`` that leaves the announcement to the caller: the settings, and
    whether the store is new (not there yet, or an empty PostgreSQL schema)."""
    settings = settings_for(store_url)
    _remember_store(settings.store_url)
    path = sqlite_file(settings.store_url)
    if path is None:
        return settings, _prepare_postgres_store(store_env(settings.store_url), create)
    if path.exists():
        return settings, False
    if not create:
        raise StoreMissing(
            f"no store at {path}: the file does not exist (check --store-url or IDLEDGER_STORE_URL)"
        )
    return settings, True


def say_new_store(store_url: str) -> None:
    """Made on purpose, but said: a mistyped path does not pass unnoticed."""
    say_aside(f"new store: {store_location(store_url)}")


def announce_new_sqlite_store(store_url: str) -> None:
    """For verbs that make a store as they open it (serve): say so when a SQLite
    file is about to be made."""
    path = sqlite_file(store_url)
    if path is not None and not path.exists():
        say_new_store(store_url)


def _prepare_postgres_store(env: dict[str, str], create: bool) -> bool:
    schema = env["POSTGRES_SCHEMA"] or "public"
    with psycopg.connect(postgres_conninfo(env), autocommit=True) as connection:
        row = connection.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s), to_regclass(%s)",
            (schema, f'"{schema}".{EVENTS_TABLE}'),
        ).fetchone()
        assert row is not None
        has_schema, events = row
        if events is not None:
            return False
        if not create:
            what = "has no idledger store" if has_schema else "does not exist"
            raise StoreMissing(
                f"no store in schema {schema!r} of {_postgres_location(env)}: the schema "
                f"{what} (check --store-url or IDLEDGER_STORE_URL)"
            )
        if not has_schema:
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
    return True


def store_environment(store_url: str | None, *, create: bool = False) -> dict[str, str]:
    """The library's environment of an existing store (see ``require_store``)."""
    return store_env(require_store(store_url, create=create).store_url)


def open_store_ledger(store_url: str | None, *, create: bool = False) -> Ledger:
    """The ledger of a store (see ``require_store``)."""
    return open_ledger(require_store(store_url, create=create))


@contextmanager
def opened_log(env: dict[str, str]) -> Iterator[LedgerLog]:
    """The event log of a store (``store_environment``), closed afterwards."""
    log = LedgerLog(env)
    try:
        yield log
    finally:
        log.close()


def store_location(store_url: str) -> str:
    """Where a store is, without its password."""
    path = sqlite_file(store_url)
    if path is not None:
        return str(path)
    env = store_env(store_url)
    return f"schema {env['POSTGRES_SCHEMA'] or 'public'!r} of {_postgres_location(env)}"


def _postgres_location(env: dict[str, str]) -> str:
    return f"PostgreSQL {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"


def _remember_store(store_url: str) -> None:
    """Kept for the error line of a store that fails later (it names the store)."""
    with contextlib.suppress(SettingsError):  # reported by whoever opens the store
        _store_in_use.set(store_location(store_url))


def _current_store() -> str | None:
    return _store_in_use.get()


# Runner locks --------------------------------------------------------------------


def refuse_if_projected(env: dict[str, str], names: Sequence[str]) -> None:
    """Refuse at once (``ProjectionBusy``: exit 3) when a runner (an API process or
    `idledger project`) owns one of the read models: before work that ends by
    swapping them in, not after it."""
    for name in names:
        lock = RunnerLock(name, view_env(env, name))
        lock.acquire()
        lock.release()


# Output --------------------------------------------------------------------------


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def say(line: str = "") -> None:
    """A line of output, whole (never wrapped or cut, whatever the width)."""
    print(line, flush=True)


def say_aside(line: str) -> None:
    """A line for the person, not the data: standard error."""
    print(line, file=sys.stderr, flush=True)


def show_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A rich table on a terminal; in a pipe, ``# title``, then the column names
    and every row as tab-separated whole values (tabs and line breaks escaped)."""
    if stdout_is_terminal():
        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(_text(value)) for value in row))
        Console().print(table)
        return
    say(f"# {title}")
    say("\t".join(columns))
    for row in rows:
        say("\t".join(tsv_field(_text(value)) for value in row))


def _text(value: object) -> str:
    return "" if value is None else str(value)


def tsv_field(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# Progress ------------------------------------------------------------------------


class RateColumn(ProgressColumn):
    """Items per second as a whole number (``25,588 ev/s``), ``-`` until known."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        # rich's speed needs two samples; a run done in one step still has an average.
        average = task.completed / task.elapsed if task.elapsed else None
        speed = task.finished_speed or task.speed or average
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s")


Advance = Callable[[float], None]


def progress_shown(*, data_on_stdout: bool = False) -> bool:
    """Progress is drawn on standard error when it is a terminal; never when
    standard output carries data to that same terminal."""
    if not sys.stderr.isatty():
        return False
    return not (data_on_stdout and sys.stdout.isatty())


@contextmanager
def progress(
    description: str, total: int | None, *, unit: str = "ev", data_on_stdout: bool = False
) -> Iterator[Advance]:
    """A progress bar on standard error (items done, rate, time left), or nothing
    when no one is watching; yields the function that advances it."""
    if not progress_shown(data_on_stdout=data_on_stdout):
        yield _ignore
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        RateColumn(unit), TimeRemainingColumn(),
    )  # fmt: skip
    # Standard output is never redirected into the bar: it may carry data.
    with Progress(
        *columns, console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)


def _ignore(_: float) -> None:
    return None
