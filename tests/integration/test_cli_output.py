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
from pathlib import Path
from uuid import UUID

from idledger.domain.app import App
from idledger.domain.ledger import Ledger
from tests.conftest import INDEX_KEY, store_url
from tests.helpers import ios
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


def test_progress_on_a_terminal_has_whole_rates_and_stays_out_of_the_data(
    sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    ledger = Ledger(sqlite_env, index_key=INDEX_KEY)
    app_id = ledger.create_app("a").app_id
    for number in range(30):
        ledger.create_user(app_id, external_id=f"u{number}", subscriptions=[ios(f"t{number}")])
    events = ledger.recorder.max_notification_id()
    ledger.close()
    url = ["--store-url", store_url(sqlite_env)]

    replayed, replay_bar = on_a_terminal("replay", *url, stdout_to=tmp_path / "replay.out")
    exported, export_bar = on_a_terminal("export", *url, stdout_to=tmp_path / "events.jsonl")

    assert replayed == 0, replay_bar
    assert re.search(rf"{events}/{events} +100% +[\d,]+ ev/s", replay_bar), replay_bar
    assert "None" not in replay_bar
    assert not re.search(r"\d\.\d+ ev/s", replay_bar)
    assert "replayed" in (tmp_path / "replay.out").read_text()
    assert exported == 0, export_bar
    assert re.search(r"[\d,]+ ev/s", export_bar)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert all(line.startswith("{") for line in lines)  # only the export, no bar
    assert len(lines) == (events or 0) + 2


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
