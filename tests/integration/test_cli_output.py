"""What the `idledger` command prints: whole values when its output is piped (tab-
separated, never a table cut to the terminal's width), progress only on a
terminal's standard error with whole-number rates, never mixed into data; and the
operator's `apps` verbs, whose keys are printed once and never shown again."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import pytest

from idledger.domain.app import App
from idledger.domain.ledger import Ledger
from idledger.projections.engine import READ_MODELS
from idledger.projections.service import ReadModels
from idledger.replay.transfer import export_lines
from idledger.replay.verb_support import opened_log
from tests.conftest import INDEX_KEY, store_url
from tests.helpers import caught_up, ios
from tests.integration.test_cli_errors import idledger

LONG_ID = "customer-" + "x" * 110  # far wider than an 80-column terminal


def test_piped_audit_prints_whole_values(store: dict[str, str], ledger: Ledger) -> None:
    app_id = ledger.create_app("a").app_id
    user_id = ledger.create_user(app_id, external_id=LONG_ID, subscriptions=[ios("t")]).user_id
    (subscription_id,) = ledger.read(app_id).user(user_id).subscriptions

    user = idledger("audit", "user", str(user_id), "--store-url", store_url(store))
    owners = idledger(
        "audit", "subscription", str(subscription_id), "--store-url", store_url(store)
    )

    assert user.returncode == 0, user.stderr
    assert LONG_ID in user.stdout
    assert "│" not in user.stdout + owners.stdout  # no rich table off a terminal
    header, *rows = owners.stdout.splitlines()[1:]
    assert header.split("\t") == ["owner", "from", "to", "cause", "ended by"]
    assert [row.split("\t")[0] for row in rows] == [str(user_id)]
    assert rows[0].split("\t")[2:4] == ["now", "api"]


def test_apps_create_show_rotate_key(store: dict[str, str], ledger: Ledger) -> None:
    url = ["--store-url", store_url(store)]

    created = idledger("apps", "create", "Shop\tEU", "--json", *url)
    app = json.loads(created.stdout)
    shown = idledger("apps", "show", app["id"], *url)
    rotated = idledger("apps", "rotate-key", app["id"], *url)

    assert created.returncode == 0, created.stderr
    assert app["name"] == "Shop\tEU"
    assert "shown only now" in created.stderr
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:2] == [f"id\t{app['id']}", "name\tShop\\tEU"]
    assert "basic_auth_key" not in shown.stdout
    assert app["basic_auth_key"] not in shown.stdout + shown.stderr
    assert rotated.returncode == 0, rotated.stderr
    (new_key,) = re.findall(r"^basic_auth_key\t(\S+)$", rotated.stdout, re.M)
    stored = ledger.get_app(UUID(app["id"]))
    assert isinstance(stored, App)
    assert stored.accepts(new_key)
    assert not stored.accepts(app["basic_auth_key"])  # the old key is refused at once


def test_apps_create_makes_a_new_sqlite_store_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "ledger.db"

    created = idledger("apps", "create", "Shop", "--store-url", f"sqlite:///{target}")

    assert created.returncode == 0, created.stderr
    assert created.stderr.splitlines()[0] == f"new store: {target}"
    assert target.exists()
    assert re.match(r"id\t[0-9a-f-]{36}\nname\tShop\n", created.stdout)


def on_a_terminal(*args: str, stdout_to: Path) -> tuple[int, str]:
    """Run the real executable with standard error on a pseudo-terminal (as a person
    watching) and standard output into a file; what the terminal showed."""
    leader, follower = pty.openpty()
    with stdout_to.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("idledger")), *args],
            stdout=out, stderr=follower, stdin=subprocess.DEVNULL,
            env={**os.environ, "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(), "COLUMNS": "120"},
        )  # fmt: skip
        os.close(follower)
        shown = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other end closed: the process is done writing
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=120)
    os.close(leader)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))  # colours


@pytest.fixture
def thirty_users(sqlite_env: dict[str, str]) -> tuple[dict[str, str], UUID, int]:
    """A SQLite store with 30 users and its read models caught up: the store's
    environment, its app and how many events its log holds."""
    ledger = Ledger(sqlite_env, index_key=INDEX_KEY)
    app_id = ledger.create_app("a").app_id
    for number in range(30):
        ledger.create_user(app_id, external_id=f"u{number}", subscriptions=[ios(f"t{number}")])
    events = ledger.recorder.max_notification_id() or 0
    ledger.close()
    caught_up(ReadModels(sqlite_env)).close()
    return sqlite_env, app_id, events


# Each verb that draws progress: its arguments (after the verb) and the bars that
# must end full, as (description, total given the log's event count, unit).
ALL: Callable[[int], int] = lambda events: events  # noqa: E731
PROGRESS: dict[str, tuple[list[str], list[tuple[str, Callable[[int], int], str]]]] = {
    "replay": ([], [("", ALL, "ev")]),
    "verify": ([], [("verifying", lambda events: len(READ_MODELS) * events, "ev")]),
    "export": ([], [("export", ALL, "ev")]),
    "import": (["{export}"], [("import: checking", ALL, "lines"),
                              ("import: writing", ALL, "ev")]),
    "import-csv": (["--app", "{app}", "{csv}"],
                   [("import-csv: check, then write", lambda _: 2 * 20, "rows")]),
    "seal": ([], [("seal", ALL, "ev")]),
}  # fmt: skip


@pytest.mark.parametrize("verb", PROGRESS)
def test_progress_on_a_terminal_ends_full_with_whole_rates_and_stays_out_of_the_data(
    verb: str, thirty_users: tuple[dict[str, str], UUID, int], tmp_path: Path
) -> None:
    env, app_id, events = thirty_users
    export = tmp_path / "events.jsonl"
    with opened_log(env) as log:
        export.write_text("".join(f"{line}\n" for line in export_lines(log, index_key=INDEX_KEY)))
    csv = tmp_path / "users.csv"
    csv.write_text("external_id\n" + "".join(f"csv{number}\n" for number in range(20)))
    # import makes a new store; every other verb works on the one with 30 users
    target = f"sqlite:///{tmp_path / 'imported.db'}" if verb == "import" else store_url(env)
    names = {"export": str(export), "app": str(app_id), "csv": str(csv)}
    arguments, bars = PROGRESS[verb]

    code, shown = on_a_terminal(
        verb, *(argument.format(**names) for argument in arguments), "--store-url", target,
        stdout_to=tmp_path / "stdout",
    )  # fmt: skip

    assert code == 0, shown
    for description, total, unit in bars:
        done = total(events)
        full = rf"{re.escape(description)}[^\r\n]*? {done}/{done} +100% +[\d,]+ {unit}/s"
        assert re.search(full, shown), f"no full bar {full!r} in:\n{shown}"
    assert "None" not in shown
    assert not re.search(r"\d\.\d+ \w+/s", shown)  # whole-number rates
    output = (tmp_path / "stdout").read_text()
    assert "━" not in output  # no bar in the data
    if verb == "export":
        lines = output.splitlines()
        assert all(line.startswith("{") for line in lines)
        assert len(lines) == events + 2


def test_a_closed_pipe_ends_an_export_quietly(sqlite_env: dict[str, str]) -> None:
    ledger = Ledger(sqlite_env, index_key=INDEX_KEY)
    app_id = ledger.create_app("a").app_id
    for number in range(150):  # more than a pipe's buffer of export lines
        ledger.create_user(app_id, external_id=f"u{number}", subscriptions=[ios(f"t{number}")])
    ledger.close()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("idledger")), "export", "--store-url",
         store_url(sqlite_env)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "IDLEDGER_INDEX_KEY": INDEX_KEY.hex()},
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    code = process.wait(timeout=120)

    assert json.loads(first)["idledger_export"] == 1
    assert process.stderr.read() == b""
    assert code == 141
