"""Per-app partitions end to end: a real `idledger serve` with IDLEDGER_PARTITIONS=2
on both stores puts each app's events in its own partition's store only, serves
each app from there, and the CLI covers every partition; an app moved to the
other partition (`export --app`, `import --append`, a pin) is served from there
with its history, and its new writes land there."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idledger.domain.service import LedgerLog
from idledger.settings import store_env
from tests.api.conftest import ADMIN_KEY
from tests.api.partitioning import new_app, partition_stores
from tests.conftest import INDEX_KEY
from tests.private_postgres import PrivatePostgres
from tests.serving import serving

ADMIN = {"Authorization": f"Key {ADMIN_KEY}"}


@pytest.fixture
def partitions(store: dict[str, str]) -> Iterator[list[str]]:
    with partition_stores(store, 2) as urls:
        yield urls


def idledger(urls: list[str], *args: str, pins: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLUMNS": "200",
        "IDLEDGER_STORE_URL": urls[0], "IDLEDGER_PARTITIONS": "2",
        "IDLEDGER_APP_PARTITIONS": pins, "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
        "IDLEDGER_MASTER_KEY": os.environ["IDLEDGER_MASTER_KEY"],
    }  # fmt: skip
    executable = Path(sys.executable).with_name("idledger")
    return subprocess.run(
        [str(executable), *args], capture_output=True, text=True, timeout=120, env=env
    )


def keyed_app(base: str, partition: int) -> tuple[str, dict[str, str]]:
    """A new app in ``partition`` and the headers presenting its key."""
    app_id, key = new_app(base, partition)
    return app_id, {"Authorization": f"Key {key}"}


def app_events(url: str, app_id: str) -> int:
    """How many events of the app's own aggregate a partition's log holds, and of
    users created in it (their creation names the app)."""
    log = LedgerLog(store_env(url))
    try:
        events, start = 0, 1
        while page := log.recorder.select_notifications(start, 1000):
            events += sum(
                1 for n in page if str(n.originator_id) == app_id or app_id.encode() in n.state
            )
            start = page[-1].id + 1
        return events
    finally:
        log.close()


def create_user(base: str, app_id: str, key: dict[str, str], external_id: str) -> str:
    body = {"identity": {"external_id": external_id}, "subscriptions": [
        {"type": "AndroidPush", "token": f"push-{external_id}"}]}  # fmt: skip
    created = httpx.post(f"{base}/apps/{app_id}/users", json=body, headers=key)
    assert created.status_code == 201, created.text
    onesignal_id: str = created.json()["identity"]["onesignal_id"]
    return onesignal_id


def test_each_app_lives_in_its_partition_and_moves(partitions: list[str], tmp_path: Path) -> None:
    env = {"IDLEDGER_PARTITIONS": "2"}
    with serving(partitions[0], tmp_path / "server.log", env=env) as base:
        first, first_key = keyed_app(base, 0)
        second, second_key = keyed_app(base, 1)
        alice = create_user(base, first, first_key, "alice")
        bob = create_user(base, second, second_key, "bob")
        create_user(base, first, first_key, "dave")  # the two logs' heads now differ
        for app_id, key, who, onesignal_id in (
            (first, first_key, "alice", alice), (second, second_key, "bob", bob),
        ):  # fmt: skip
            found = httpx.get(f"{base}/apps/{app_id}/users/by/external_id/{who}", headers=key)
            assert found.json()["identity"]["onesignal_id"] == onesignal_id
        # One app's key opens nothing of the other, whichever partition it is in.
        refused = httpx.get(f"{base}/apps/{second}/users/by/external_id/bob", headers=first_key)
        assert refused.status_code == 401
        lag = httpx.get(f"{base}/lag").json()
        assert {"profiles", "profiles@p1", "mau@p1"} <= set(lag)
        ready = httpx.get(f"{base}/ready").json()
        assert ready["status"] == "ready"
        assert "1" in ready["partitions"]
        with httpx.Client(base_url=base) as console:  # the organization sees every partition
            signed_in = console.post("/console/sign-in", headers={"Origin": base},
                                     data={"app_id": "", "api_key": ADMIN_KEY})  # fmt: skip
            assert signed_in.status_code == 303, signed_in.text
            listing = console.get("/console/apps")
            assert f"/console/apps/{first}" in listing.text
            assert f"/console/apps/{second}" in listing.text
            page = console.get(f"/console/apps/{second}/users/{bob}")
            assert page.status_code == 200, page.text
            assert "bob" in page.text
            # Its health strip is /ready's, whichever partition the page's app is in.
            assert f"log head {ready['log_head']}</" in page.text
    assert app_events(partitions[0], first) > 0
    assert app_events(partitions[1], first) == 0
    assert app_events(partitions[1], second) > 0
    assert app_events(partitions[0], second) == 0

    listed = idledger(partitions, "partitions")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["0", "1"], listed.stdout
    assert all(int(row[2]) > 0 and int(row[3]) >= 1 for row in rows), listed.stdout
    verified = idledger(partitions, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "profiles@p1: identical" in verified.stdout
    replayed = idledger(partitions, "replay", "--jobs", "2")
    assert replayed.returncode == 0, replayed.stderr
    assert "ownership@p1" in replayed.stdout

    # Move the first app to partition 1: copy its events, then pin it there.
    exported = idledger(partitions, "export", "--app", first)
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "first.jsonl").write_text(exported.stdout)
    imported = idledger(
        partitions, "--partition", "1", "import", "--append", str(tmp_path / "first.jsonl"),
        "--keys-from", partitions[0],
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    pinned = {**env, "IDLEDGER_APP_PARTITIONS": f"{first}=1"}
    with serving(partitions[0], tmp_path / "moved.log", env=pinned) as base:
        found = httpx.get(f"{base}/apps/{first}/users/by/external_id/alice", headers=first_key)
        assert found.status_code == 200, found.text
        assert found.json()["identity"]["onesignal_id"] == alice
        before = app_events(partitions[0], first)
        create_user(base, first, first_key, "carol")
        again = httpx.get(f"{base}/apps/{first}/users/by/external_id/carol", headers=first_key)
        assert again.status_code == 200, again.text
    assert app_events(partitions[0], first) == before  # the old copy is left as it was
    shown = idledger(partitions, "apps", "show", first, "--json", pins=f"{first}=1")
    assert shown.returncode == 0, shown.stderr
    assert first in shown.stdout


def test_a_partition_that_does_not_exist_is_one_line_and_exit_2(
    partitions: list[str],
) -> None:
    result = idledger(partitions, "--partition", "5", "dead-letters")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "idledger dead-letters: --partition 5: there are 2 partition(s) (0-1)"
    ]


def test_one_partition_down_leaves_the_others_serving(tmp_path: Path) -> None:
    """Partition 1 on a private PostgreSQL server that is stopped: the app there
    answers 503 at once, the app in partition 0 (SQLite) keeps reading and writing,
    /ready stays 200 ("degraded", naming partition 1), and partition 1 heals
    without a restart."""
    with PrivatePostgres() as postgres:
        env = {"IDLEDGER_PARTITIONS": postgres.url, "IDLEDGER_STARTUP_TIMEOUT": "10"}
        with serving(f"sqlite:///{tmp_path}/p0.db", tmp_path / "server.log", env=env) as base:
            healthy, healthy_key = keyed_app(base, 0)
            doomed, doomed_key = keyed_app(base, 1)
            create_user(base, doomed, doomed_key, "before")
            postgres.stop("immediate")

            body = {"identity": {"external_id": "lost"}}
            down = httpx.post(f"{base}/apps/{doomed}/users", json=body, headers=doomed_key)
            assert down.status_code == 503, down.text
            create_user(base, healthy, healthy_key, "during")  # 201, read back
            found = httpx.get(f"{base}/apps/{healthy}/users/by/external_id/during",
                              headers=healthy_key)  # fmt: skip
            assert found.status_code == 200, found.text
            ready = httpx.get(f"{base}/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "degraded"
            assert any(p.startswith("partition 1: ") for p in ready.json()["problems"])

            postgres.start()
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/ready").json()["status"] != "ready":
                assert time.monotonic() < deadline, "partition 1 did not heal"
                time.sleep(0.2)
            create_user(base, doomed, doomed_key, "after")


def test_one_project_worker_follows_every_partition(partitions: list[str], tmp_path: Path) -> None:
    """The API without its embedded projector: every write waits for the read models
    of its app's partition, which only `idledger project --follow` keeps up."""
    env = {"IDLEDGER_PARTITIONS": "2", "IDLEDGER_EMBEDDED_PROJECTOR": "false",
           "IDLEDGER_CONSISTENCY_TIMEOUT": "20"}  # fmt: skip
    with serving(partitions[0], tmp_path / "server.log", env=env) as base:
        apps = [keyed_app(base, 0), keyed_app(base, 1)]
        worker_env = {
            **os.environ, **env, "IDLEDGER_STORE_URL": partitions[0],
            "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
        }  # fmt: skip
        command = [str(Path(sys.executable).with_name("idledger")), "project", "--follow"]
        with (tmp_path / "worker.log").open("w") as log:
            worker = subprocess.Popen(command, env=worker_env, stdout=log, stderr=log)
            try:
                for number, (app_id, key) in enumerate(apps):
                    create_user(base, app_id, key, f"followed-{number}")  # 201 once projected
            finally:
                worker.terminate()
                worker.wait(timeout=30)
        assert "in 2 partitions" in (tmp_path / "worker.log").read_text()
