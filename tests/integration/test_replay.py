"""Replay and audit tooling: rebuild, swap, verify, --until, export/import, CSV."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from idledger.cli import app as cli
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.projections.engine import Follower
from idledger.projections.lock import ProjectionBusy, postgres_conninfo
from idledger.projections.service import Projector, ReadModels
from idledger.replay.csv_import import import_csv
from idledger.replay.rebuild import REBUILD, rebuild, share_out, swap_in, verify
from idledger.replay.transfer import ImportRefused, export_lines, import_events
from tests.commands import Step, play, step
from tests.conftest import INDEX_KEY, FakeClock, fresh_store, store_url
from tests.helpers import caught_up, device_user, ios

NAMES = ["profiles", "ownership", "mau"]


def dumps(env: dict[str, str], variant: str = "") -> dict[str, Any]:
    log = LedgerLog(env)
    try:
        followers = [Follower(log, env, name, variant=variant) for name in NAMES]
        try:
            return {f.name: f.view.dump() for f in followers}
        finally:
            for follower in followers:
                follower.close()
    finally:
        log.close()


def small_ledger(ledger: Ledger) -> tuple[UUID, list[UUID]]:
    app_id = ledger.create_app("replay").app_id
    subscriptions = []
    for number in range(6):
        _, push = device_user(ledger, app_id, ios(f"phone-{number}"))
        ledger.login(app_id, push, f"person-{number % 3}")
        ledger.record_session(app_id, push)
        subscriptions.append(push)
    ledger.logout(app_id, subscriptions[0])
    return app_id, subscriptions


@settings(
    max_examples=8,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=5, max_size=25))
def test_a_rebuild_equals_the_live_read_models(store_kind: str, steps: list[Step]) -> None:
    with fresh_store(store_kind) as env:
        ledger = Ledger(env, index_key=INDEX_KEY, clock=FakeClock())
        models = ReadModels(env)
        try:
            play(ledger, steps)
            caught_up(models)
            rebuild(env, NAMES)

            assert dumps(env, REBUILD) == dumps(env)
            assert all(d.identical for d in verify(env, NAMES).values())
        finally:
            models.close()
            ledger.close()


@pytest.mark.parametrize("until", [None, datetime(2999, 1, 1, tzinfo=UTC)])
def test_a_rebuild_shared_out_among_processes_equals_one_in_process(
    store: dict[str, str], ledger: Ledger, until: datetime | None
) -> None:
    small_ledger(ledger)
    models = caught_up(ReadModels(store))
    models.close()
    ticks: list[float] = []

    # Without ``until`` MAU and ownership are built by SQL beside the one process's
    # reading (``jobs`` then adds no process); with it, the processes share them out.
    reports = rebuild(store, NAMES, jobs=2, progress=ticks.append, until=until)

    assert [report.name for report in reports] == NAMES
    head = ledger.recorder.max_notification_id()
    assert {report.position for report in reports} == {head}
    assert sum(ticks) == pytest.approx(head)  # each process read the whole log once
    assert dumps(store, REBUILD) == dumps(store)


def test_read_models_are_shared_out_by_cost() -> None:
    assert share_out(NAMES, 2) == [["profiles"], ["mau", "ownership"]]
    assert share_out(NAMES, 8) == [["profiles"], ["mau"], ["ownership"]]
    assert share_out(["mau"], 2) == [["mau"]]


def test_a_rebuild_until_an_instant_equals_the_fold_at_that_instant(
    store: dict[str, str], ledger: Ledger
) -> None:
    app_id, subscriptions = small_ledger(ledger)
    instant = ledger.clock()
    ledger.logout(app_id, subscriptions[1])
    ledger.delete_subscription(app_id, subscriptions[2])

    rebuild(store, NAMES, until=instant)

    log = LedgerLog(store)
    profiles = Follower(log, store, "profiles", variant=REBUILD)
    ownership = Follower(log, store, "ownership", variant=REBUILD)
    try:
        for subscription_id in subscriptions:
            owner = ledger.owner_of(subscription_id, instant)
            assert ownership.view.owner_of(app_id, subscription_id, instant) == owner  # type: ignore[attr-defined]
            assert owner is not None
            then = ledger.user_as_of(owner, instant)
            rebuilt = profiles.view.user(app_id, owner)  # type: ignore[attr-defined]
            assert then is not None
            assert rebuilt is not None
            assert rebuilt.external_id == then.external_id
            assert set(rebuilt.subscriptions) == set(then.subscriptions)
            assert profiles.view.subscription(app_id, subscription_id) is not None  # type: ignore[attr-defined]
    finally:
        profiles.close()
        ownership.close()
        log.close()


def test_swap_in_replaces_the_live_read_models(store: dict[str, str], ledger: Ledger) -> None:
    small_ledger(ledger)
    models = ReadModels(store)
    caught_up(models)
    live_before = dumps(store)
    rebuild(store, NAMES)
    holder = Projector(ReadModels(store, ["mau"]))
    holder.acquire()
    try:
        with pytest.raises(ProjectionBusy):
            swap_in(store, "mau")
    finally:
        holder.release()
        holder.models.close()

    for name in NAMES:
        swap_in(store, name)

    assert dumps(store) == live_before
    assert all(d.identical for d in verify(store, NAMES).values())
    models.close()


def test_verify_finds_a_corrupted_row(store: dict[str, str], ledger: Ledger) -> None:
    app_id, _ = small_ledger(ledger)
    models = ReadModels(store)
    caught_up(models)
    models.close()
    corrupt(
        store, "UPDATE {mau_counts} SET active = active + 1 WHERE app_id = '" + str(app_id) + "'"
    )

    differences = verify(store, NAMES)
    result = CliRunner().invoke(cli, ["verify", "--store-url", store_url(store)])

    assert differences["profiles"].identical
    assert differences["ownership"].identical
    assert not differences["mau"].identical
    assert differences["mau"].only_live["mau_counts"]
    assert result.exit_code == 1
    assert "mau.mau_counts only live" in result.output
    assert "profiles: identical" in result.output


def corrupt(env: dict[str, str], statement: str) -> None:
    """Tamper with a read model behind the projector's back, as an incident might."""
    if "SQLITE_DBNAME" in env:
        path = env["SQLITE_DBNAME"].removesuffix(".db") + ".mau.db"
        with sqlite3.connect(path) as connection:
            connection.execute(statement.format(mau_counts="mau_counts"))
        return
    table = f'"{env["POSTGRES_SCHEMA"]}"."mau_counts"'
    with psycopg.connect(postgres_conninfo(env), autocommit=True) as connection:
        connection.execute(statement.format(mau_counts=table))


def test_export_from_sqlite_and_import_into_each_store_replays_identically(
    sqlite_env: dict[str, str], store_kind: str
) -> None:
    source = Ledger(sqlite_env, index_key=INDEX_KEY)
    small_ledger(source)
    caught_up(ReadModels(sqlite_env)).close()
    lines = list(export_lines(source))

    with fresh_store(store_kind) as target:
        log = LedgerLog(target)
        imported = import_events(log, lines, index_key=INDEX_KEY, keys_from=source)
        source.close()
        with pytest.raises(ImportRefused, match="not empty"):
            import_events(log, lines, index_key=INDEX_KEY)
        log.close()
        caught_up(ReadModels(target)).close()

        assert imported.events == len(lines) - 2  # the header and the trailer
        assert (imported.first_position, imported.last_position) == (1, len(lines) - 2)
        assert dumps(target) == dumps(sqlite_env)
        exported = list(export_lines(LedgerLog(target), index_key=INDEX_KEY))
        assert exported[1:] == lines[1:]  # the header names the store kind
        again = Ledger(target, index_key=INDEX_KEY)
        app_id = UUID(json.loads(lines[1])["originator_id"])
        assert again.read(app_id).holder("external_id", "person-1") is not None  # claims came too
        again.close()


def test_a_bad_line_imports_nothing_and_says_where(ledger: Ledger, store_kind: str) -> None:
    small_ledger(ledger)
    lines = list(export_lines(ledger))
    broken = json.loads(lines[5])
    broken["state"]["timestamp"] = "not a time"
    bad = [*lines[:5], json.dumps(broken), *lines[6:]]

    with fresh_store(store_kind) as target:
        log = LedgerLog(target)
        with pytest.raises(ImportRefused, match="line 6"):
            import_events(log, bad, index_key=INDEX_KEY)
        with pytest.raises(ImportRefused, match="line 2"):
            import_events(log, [lines[0], lines[2], lines[1], *lines[3:]], index_key=INDEX_KEY)
        assert (log.recorder.max_notification_id() or 0) == 0
        log.close()


def test_export_of_one_app_holds_only_that_app(ledger: Ledger) -> None:
    app_id, _ = small_ledger(ledger)
    other, _ = small_ledger(ledger)

    lines = [json.loads(line) for line in export_lines(ledger, app_id)][1:-1]
    everything = list(export_lines(ledger))

    assert 0 < len(lines) < len(everything)
    assert str(other) not in json.dumps(lines)
    assert {line["topic"].split(":")[0] for line in lines} == {
        "idledger.app", "idledger.user", "idledger.subscription", "idledger.claim",
    }  # fmt: skip


def test_csv_import_takes_good_rows_and_reports_bad_ones(ledger: Ledger) -> None:
    app_id = ledger.create_app("csv").app_id
    rows = [
        "external_id,email,phone_number,language,timezone_id,tags,tag:plan,alias:crm",
        'ann,ann@example.com,+33612345678,fr,Europe/Paris,"{""vip"": true}",gold,c-1',
        "bob,not-an-email,,,,,,",
        "NULL,x@example.com,,,,,,",
        "cat,,+1555,,,,,",
        "dan,,,,Mars/Olympus,,,",
        ",,,,,,,",
        "ann,,,en,,,silver,",
    ]

    report = import_csv(ledger, app_id, rows, "users.csv")

    assert (report.created, report.updated) == (1, 1)
    assert [line for line, _ in report.rejected] == [3, 4, 5, 6, 7]
    reasons = dict(report.rejected)
    assert "email" in reasons[3]
    assert "placeholder" in reasons[4]
    assert "E.164" in reasons[5]
    assert "time zone" in reasons[6]
    user_id = ledger.read(app_id).holder("external_id", "ann")
    assert user_id is not None
    ann = ledger.read(app_id).user(user_id)
    assert ann.tags == {"vip": "True", "plan": "silver"}
    assert ann.aliases == {"crm": "c-1"}
    assert ann.properties.language == "en"
    assert sorted(k.value for k in ann.subscriptions.values()) == ["Email", "SMS"]
    created = ledger.ownership_timeline(next(iter(ann.subscriptions)))[0]
    assert created.cause == "import"


def test_replay_with_a_progress_bar_runs_without_a_terminal(
    store: dict[str, str], ledger: Ledger
) -> None:
    small_ledger(ledger)
    executable = Path(sys.executable).with_name("idledger")

    result = subprocess.run(
        [str(executable), "replay", "--store-url", store_url(store)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "replayed" in result.stdout
    assert result.stdout.count("beside the live one") == 3


def test_audit_verbs_print_tables_and_json(store: dict[str, str], ledger: Ledger) -> None:
    _, subscriptions = small_ledger(ledger)
    runner = CliRunner()
    url = ["--store-url", store_url(store)]
    owner = ledger.owner_of(subscriptions[0], ledger.clock())
    assert owner is not None

    timeline = runner.invoke(cli, ["audit", "subscription", str(subscriptions[0]), "--json", *url])
    table = runner.invoke(cli, ["audit", "subscription", str(subscriptions[0]), *url])
    user = runner.invoke(cli, ["audit", "user", str(owner), "--json", *url])
    missing = runner.invoke(cli, ["audit", "user", str(UUID(int=1)), *url])

    assert timeline.exit_code == 0, timeline.output
    causes = [i["cause"] for i in json.loads(timeline.output)["timeline"]]
    assert causes == ["api", "logout"]  # identified in place at login, moved at logout
    assert "logout" in table.output
    assert json.loads(user.output)["events"][0]["type"] == "idledger.user:Created"
    assert missing.exit_code == 1
