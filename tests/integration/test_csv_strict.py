"""`idledger import-csv` is strict: each malformed file or row is one clear line with
its line number and a non-zero exit, never a traceback; with more rejects than
--max-rejects nothing is written. Run as a real process on a SQLite store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from idledger.domain.ledger import Ledger
from idledger.settings import store_env
from tests.conftest import INDEX_KEY

FIXTURES = Path(__file__).parent.parent / "fixtures" / "csv"
COLUMNS = (
    "external_id", "email", "phone_number", "language", "timezone_id", "country", "tags",
    "tag:<key>", "alias:<label>",
)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def app_id(store: str) -> UUID:
    ledger = Ledger(store_env(store), index_key=INDEX_KEY)
    try:
        return ledger.create_app("csv").app_id
    finally:
        ledger.close()


def import_csv(store: str, app_id: UUID, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("idledger")
    return subprocess.run(
        [str(executable), "import-csv", str(FIXTURES / name), "--app", str(app_id), *args,
         "--store-url", store],
        capture_output=True, text=True, timeout=60, check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
             "IDLEDGER_MASTER_KEY": os.environ["IDLEDGER_MASTER_KEY"]},
    )  # fmt: skip


def holders(store: str, app_id: UUID, *external_ids: str) -> list[UUID | None]:
    """Who holds each external_id (``None``: nobody, nothing was written for it)."""
    ledger = Ledger(store_env(store), index_key=INDEX_KEY)
    try:
        view = ledger.read(app_id)
        return [view.holder("external_id", e) for e in external_ids]
    finally:
        ledger.close()


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


MALFORMED = {
    "unterminated_quote.csv": (3, "never closed (unterminated quote), so lines 3-4"),
    "multiline_field.csv": (3, "malformed row: external_id holds a line break (a quoted"),
    "extra_column.csv": (3, "malformed row: 3 fields but the header has 2 columns"),
    "missing_column.csv": (3, "malformed row: 2 fields but the header has 3 columns"),
    "control_char_id.csv": (3, "external_id: holds the control character U+0001"),
    "placeholder_external_id.csv": (3, "external_id: 'NULL' is a placeholder, not an id"),
    "bad_phone.csv": (3, "phone_number '555-1234' is not E.164"),
}


@pytest.fixture(scope="module")
def malformed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, UUID, dict[str, subprocess.CompletedProcess[str]]]:
    """Each malformed fixture imported into one store, the processes side by side."""
    store = f"sqlite:///{tmp_path_factory.mktemp('malformed') / 'ledger.db'}"
    ledger = Ledger(store_env(store), index_key=INDEX_KEY)
    try:
        app = ledger.create_app("csv").app_id
    finally:
        ledger.close()
    with ThreadPoolExecutor(max_workers=len(MALFORMED)) as pool:
        runs = {name: pool.submit(import_csv, store, app, name) for name in MALFORMED}
        return store, app, {name: run.result() for name, run in runs.items()}


@pytest.mark.parametrize("fixture", list(MALFORMED))
def test_a_bad_row_is_reported_with_its_line_and_nothing_is_written(
    malformed: tuple[str, UUID, dict[str, subprocess.CompletedProcess[str]]], fixture: str
) -> None:
    store, app_id, results = malformed
    result = results[fixture]
    line, reason = MALFORMED[fixture]

    assert result.returncode == 1, result.stdout + result.stderr
    no_traceback(result)
    assert re.search(rf"^  line {line}: .*{re.escape(reason)}", result.stdout, re.M), result.stdout
    assert "rejected 1 (nothing written)" in result.stdout
    assert "nothing was written" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert holders(store, app_id, "ann", "bob", "cat") == [None, None, None]


def test_an_unknown_column_is_refused_at_once(store: str, app_id: UUID) -> None:
    result = import_csv(store, app_id, "unknown_header.csv")

    assert result.returncode == 2
    assert result.stdout == ""
    [message] = result.stderr.splitlines()
    assert "unknown column 'favourite_colour'" in message
    assert all(column in message for column in COLUMNS)


def test_a_file_that_is_not_utf8_is_refused_with_the_offset_and_line(
    store: str, app_id: UUID
) -> None:
    result = import_csv(store, app_id, "not_utf8.csv")

    assert result.returncode == 2
    no_traceback(result)
    [message] = result.stderr.splitlines()
    assert "byte 0xE9 at byte offset 41 (line 3)" in message
    assert "must be UTF-8" in message


@pytest.mark.parametrize(
    ("fixture", "code", "stream", "message"),
    [
        ("empty.csv", 2, "stderr", "empty.csv is empty: expected a header row"),
        ("header_only.csv", 0, "stdout", "header_only.csv has a header but no rows"),
    ],
)
def test_an_empty_or_header_only_file_says_so(
    store: str, app_id: UUID, fixture: str, code: int, stream: str, message: str
) -> None:
    result = import_csv(store, app_id, fixture)

    assert result.returncode == code
    [line] = getattr(result, stream).splitlines()
    assert message in line


@pytest.mark.usefixtures("app_id")
def test_an_unknown_app_fails_at_once(store: str) -> None:
    other = uuid4()

    result = import_csv(store, other, "good.csv")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"import refused: app {other} not found in the store"]


def test_more_rejects_than_allowed_write_nothing(store: str, app_id: UUID) -> None:
    result = import_csv(store, app_id, "some_rejects.csv", "--max-rejects", "1")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "rows read 5, users created 0, users updated 0, rejected 2 (nothing written)",
        "  line 3: external_id: 'undefined' is a placeholder, not an id",
        "  line 5: phone_number '+1555' is not E.164 (+15551234567)",
    ]
    assert result.stderr.splitlines() == [
        "import failed: 2 rows rejected, more than --max-rejects 1 allows; nothing was written"
    ]
    assert holders(store, app_id, "ann", "bob", "dan") == [None, None, None]


def test_rejects_within_the_limit_write_the_good_rows(store: str, app_id: UUID) -> None:
    result = import_csv(store, app_id, "some_rejects.csv", "--max-rejects", "2")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "rows read 5, users created 3, users updated 0, rejected 2"
    )
    assert "  line 5: phone_number '+1555' is not E.164 (+15551234567)" in result.stdout
    assert None not in holders(store, app_id, "ann", "bob", "dan")


def test_a_good_file_prints_the_summary(store: str, app_id: UUID) -> None:
    result = import_csv(store, app_id, "good.csv")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "rows read 3, users created 2, users updated 1, rejected 0\n"
    assert result.stderr == ""
    ledger = Ledger(store_env(store), index_key=INDEX_KEY)
    try:
        view = ledger.read(app_id)
        ann_id = view.holder("external_id", "ann")
        assert ann_id is not None
        ann = view.user(ann_id)
        assert ann.tags == {"vip": "True", "plan": "silver"}
        assert ann.aliases == {"crm": "c-1"}
        assert ann.properties.language == "en"
    finally:
        ledger.close()


def test_help_lists_the_columns() -> None:
    executable = Path(sys.executable).with_name("idledger")
    result = subprocess.run(
        [str(executable), "import-csv", "--help"], capture_output=True, text=True, timeout=60,
        check=False, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip

    assert result.returncode == 0
    assert all(column in result.stdout for column in COLUMNS)
    assert "--max-rejects" in result.stdout
