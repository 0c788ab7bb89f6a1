"""`idledger import-csv`: a strict CSV import of users, with a summary of the rejects.

Every problem is one line on standard error and a non-zero exit, never a traceback:
2 for a file refused as a whole, 1 for an unknown app, too many rejects or a store
failure."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from idledger.domain.ledger import Ledger
from idledger.projections.dead_letters import describe
from idledger.replay.csv_import import CsvRefused, CsvReport, import_csv, read_csv_text, require_app
from idledger.replay.verb_support import StoreUrl, open_store_ledger, progress

SHOWN_REJECTS = 50


def import_csv_command(
    source: Annotated[Path, typer.Argument(dir_okay=False, help="users.csv, UTF-8, a header row.")],
    app: Annotated[UUID, typer.Option(help="The app to import into; it must be in the store.")],
    max_rejects: Annotated[
        int,
        typer.Option(
            min=0,
            help="How many rows may be rejected. With more, the import fails (exit 1) and "
            "nothing is written; with at most this many, the good rows are written.",
        ),
    ] = 0,
    store_url: StoreUrl = None,
) -> None:
    """Import users from a OneSignal-style CSV, strictly: every row is checked first.

    Columns (the header row; any of them, each at most once): external_id, email,
    phone_number (E.164, +15551234567), language, timezone_id, country, tags (a JSON
    object of plain values), tag:<key>, alias:<label>.

    An unknown column, or a file that is empty or not UTF-8, is refused (exit 2); so
    is an app that is not in the store (exit 1). A row with more or fewer fields than
    the header, an unterminated quote, a line break inside a quoted field, a control
    character in an id, or a value the ledger refuses (placeholder external_id, bad
    E.164, unknown time zone, an alias held by another user...) is rejected with its
    line.

    If more than --max-rejects rows are rejected nothing is written and the exit
    code is 1; otherwise the good rows are written: a row whose external_id exists
    updates that user, the others create users with their email and SMS
    subscriptions (cause import, actor import:csv:<file>). Prints rows read, users
    created, users updated and the rejects (line and reason, the first 50, and the
    total).
    """
    ledger = open_store_ledger(store_url)  # a missing store: one line, exit 2
    try:
        report = _import(ledger, app, source, max_rejects)
    except CsvRefused as refused:
        typer.echo(f"import refused: {refused.message}", err=True)
        code = refused.exit_code
    except Exception as error:  # no traceback on the command line, ever
        typer.echo(f"import failed: {describe(error)}", err=True)
        code = 1
    else:
        _summary(report, source)
        code = 1 if report.failed else 0
    finally:
        ledger.close()
    if code:
        raise typer.Exit(code)


def _import(ledger: Ledger, app: UUID, source: Path, max_rejects: int) -> CsvReport:
    require_app(ledger, app)  # before a single row is read
    text = read_csv_text(source)
    rows = max(text.count("\n") - 1, 0)  # about: a quoted field may hold a line break
    # Every row is checked before any is written, then the good ones are written.
    with progress("import-csv: check, then write", 2 * rows, unit="rows") as advance:
        return import_csv(
            ledger, app, io.StringIO(text, newline=""), source.name, max_rejects=max_rejects,
            progress=advance,
        )  # fmt: skip


def _summary(report: CsvReport, source: Path) -> None:
    rejected = len(report.rejected)
    if report.rows_read == 0:
        typer.echo(f"rows read 0: {source.name} has a header but no rows; nothing to import")
        return
    if report.written:
        typer.echo(
            f"rows read {report.rows_read}, users created {report.created}, "
            f"users updated {report.updated}, rejected {rejected}"
        )
    else:
        typer.echo(
            f"rows read {report.rows_read}, users created 0, users updated 0, "
            f"rejected {rejected} (nothing written)"
        )
    for line, reason in report.rejected[:SHOWN_REJECTS]:
        typer.echo(f"  line {line}: {reason}")
    if rejected > SHOWN_REJECTS:
        typer.echo(f"  ... and {rejected - SHOWN_REJECTS} more ({rejected} rejected in all)")
    if report.stopped is not None:
        line, error = report.stopped
        typer.echo(
            f"import stopped at line {line} by {error}; written before it: {report.created} "
            f"users created, {report.updated} updated; rows from line {line} on were not written",
            err=True,
        )
    elif report.unreadable_from is not None:
        typer.echo(
            f"import failed: an unterminated quote on line {report.unreadable_from} hides the "
            "rest of the file; nothing was written",
            err=True,
        )
    elif report.too_many_rejects and not report.written:
        typer.echo(
            f"import failed: {_rows(rejected)} rejected, more than --max-rejects "
            f"{report.max_rejects} allows; nothing was written",
            err=True,
        )
    elif report.too_many_rejects:
        typer.echo(
            f"import failed: {_rows(rejected)} rejected (some while writing), more than "
            f"--max-rejects {report.max_rejects} allows; written: {report.created} users "
            f"created, {report.updated} updated",
            err=True,
        )


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"
