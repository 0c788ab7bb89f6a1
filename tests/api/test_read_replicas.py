"""Read replicas on a real hot standby of the test PostgreSQL server.

A standby made by ``pg_basebackup -R`` (tests/private_postgres.py: ``HotStandby``)
streams the primary's WAL on a port of its own; a real `idledger serve` reads from
it through IDLEDGER_READ_URL. The contract: a write's answer carries
X-Idledger-Position; a read carrying it as X-Idledger-Min-Position sees that write
(from the standby once it has it, else from the primary); a read without it is
answered by the standby (shown by pausing the standby's replay: it then answers
404 for a user the primary has); a standby stopped, or too far behind, is skipped
and every read still answers 2xx from the primary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from idledger.settings import Settings, SettingsError, read_store_envs
from tests.api.conftest import ADMIN_KEY, Tenant
from tests.conftest import POSTGRES_URL, store_url
from tests.private_postgres import HotStandby, free_port
from tests.serving import serving

POSITION = "X-Idledger-Position"
MIN_POSITION = "X-Idledger-Min-Position"
READ_FROM = "X-Idledger-Read-From"
WITHIN = 30.0  # seconds a state the test waits for may take under a loaded CI


@pytest.fixture(scope="module")
def standby() -> Iterator[HotStandby]:
    with HotStandby(POSTGRES_URL) as server:
        yield server


@pytest.fixture
def running_standby(standby: HotStandby) -> Iterator[HotStandby]:
    """The module's standby, started and replaying (whatever an earlier test left)."""
    if not standby.running:
        standby.start()
    standby.resume_replay()
    yield standby
    if standby.running:
        standby.resume_replay()


def eventually(check: Callable[[], Any], what: str, within: float = WITHIN) -> Any:
    """The first truthy result of ``check``, polled until ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {within:g} s: {what}"
        time.sleep(0.1)


class Api:
    """A client of one app on a real server."""

    def __init__(self, base: str) -> None:
        self.base = base
        created = httpx.post(
            f"{base}/apps", json={"name": "replicas"}, headers={"Authorization": f"Key {ADMIN_KEY}"}
        )
        assert created.status_code == 200, created.text
        self.app = f"{base}/apps/{created.json()['id']}"
        self.key = {"Authorization": f"Key {created.json()['basic_auth_key']}"}

    def create(self, external_id: str, plan: str = "gold") -> int:
        """Create (or update) a user; the log position its answer carries."""
        body = {"identity": {"external_id": external_id}, "properties": {"tags": {"plan": plan}}}
        answer = httpx.post(f"{self.app}/users", json=body, headers=self.key, timeout=30)
        assert answer.status_code in (200, 201), answer.text
        return int(answer.headers[POSITION])

    def read(self, external_id: str, at_least: int | None = None) -> httpx.Response:
        headers = dict(self.key)
        if at_least is not None:
            headers[MIN_POSITION] = str(at_least)
        return httpx.get(
            f"{self.app}/users/by/external_id/{external_id}", headers=headers, timeout=30
        )

    def replica_states(self) -> list[str]:
        ready = httpx.get(f"{self.base}/ready", timeout=30).json()
        return [str(replica["state"]) for replica in ready["read_replicas"]]

    def replica_state(self) -> str:
        (state,) = self.replica_states()
        return state


def tag(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    return str(answer.json()["properties"]["tags"]["plan"])


@pytest.mark.postgres
@pytest.mark.slow
def test_reads_come_from_the_standby_and_see_their_writes(
    running_standby: HotStandby, postgres_env: dict[str, str], tmp_path: Path
) -> None:
    settings = {
        "IDLEDGER_READ_URL": running_standby.url,
        "IDLEDGER_READ_WAIT_MS": "300",
        "IDLEDGER_READ_MAX_LAG": "120",  # paused below: it must stay in use meanwhile
    }
    log_path = tmp_path / "serve.log"
    with serving(store_url(postgres_env), log_path, env=settings) as base:
        api = Api(base)
        eventually(lambda: api.replica_state() == "up", "the standby is in use")

        # Read-your-writes: each read carrying its write's position sees that write.
        positions = []
        for number in range(8):
            positions.append(api.create("rr-person", plan=f"plan-{number}"))
            assert tag(api.read("rr-person", at_least=positions[-1])) == f"plan-{number}"
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
        eventually(
            lambda: (
                api.read("rr-person", at_least=positions[-1]).headers.get(READ_FROM) == "standby-1"
            ),
            "the standby has every write",
        )

        # Reads without a position are answered by the standby: with its replay
        # paused, it does not have a user the primary has just created.
        running_standby.pause_replay()
        eventually(
            lambda: running_standby.execute("SELECT pg_get_wal_replay_pause_state()") == "paused",
            "the standby's replay is paused",
        )
        hidden = api.create("rr-hidden")
        eventual = api.read("rr-hidden")
        assert eventual.status_code == 404, eventual.text
        assert api.read("rr-person").headers.get(READ_FROM) == "standby-1"

        # With the write's position, the read waits (IDLEDGER_READ_WAIT_MS) for the
        # standby, then is answered by the primary, which has it.
        fallback = api.read("rr-hidden", at_least=hidden)
        assert (tag(fallback), fallback.headers[READ_FROM]) == ("gold", "primary")

        # Replaying again, the standby gets there and answers that read itself.
        running_standby.resume_replay()
        from_standby = eventually(
            lambda: (
                (r := api.read("rr-hidden", at_least=hidden)).headers[READ_FROM] != "primary" and r
            ),
            "the standby answers the read-your-writes read",
        )
        assert (tag(from_standby), from_standby.headers[READ_FROM]) == ("gold", "standby-1")

        # The standby stops: every read is still answered, by the primary.
        running_standby.stop("fast")
        answers = [api.read("rr-person") for _ in range(10)]
        answers += [api.read("rr-hidden", at_least=hidden) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * len(answers), answers[-1].text
        assert answers[-1].headers[READ_FROM] == "primary"
        assert api.replica_state() == "down"
        assert tag(api.read("rr-person")) == "plan-7"

        # Back up, it is used again without a restart of idledger.
        running_standby.start()
        eventually(lambda: api.replica_state() == "up", "the standby is in use again")
        assert api.read("rr-person").headers.get(READ_FROM) == "standby-1"

    log = log_path.read_text()
    assert "set aside" in log
    assert "Traceback" not in log
    assert "rr-person" not in log
    assert "rr-hidden" not in log


@pytest.mark.postgres
@pytest.mark.slow
def test_a_standby_too_far_behind_is_skipped(
    running_standby: HotStandby, postgres_env: dict[str, str], tmp_path: Path
) -> None:
    settings = {"IDLEDGER_READ_URL": running_standby.url, "IDLEDGER_READ_MAX_LAG": "1"}
    with serving(store_url(postgres_env), tmp_path / "serve.log", env=settings) as base:
        api = Api(base)
        eventually(lambda: api.replica_state() == "up", "the standby is in use")
        running_standby.pause_replay()
        api.create("rr-late")
        eventually(lambda: api.replica_state() == "behind", "the standby is seen behind")
        answer = api.read("rr-late")
        assert (tag(answer), answer.headers[READ_FROM]) == ("gold", "primary")
        running_standby.resume_replay()
        eventually(lambda: api.replica_state() == "up", "the standby caught up is used again")
        assert api.read("rr-late").headers.get(READ_FROM) == "standby-1"


@pytest.mark.postgres
@pytest.mark.slow
def test_a_standby_down_from_the_start_is_skipped_for_another(
    running_standby: HotStandby, postgres_env: dict[str, str], tmp_path: Path
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    settings = {"IDLEDGER_READ_URL": f"{nowhere}, {running_standby.url}"}
    with serving(store_url(postgres_env), tmp_path / "serve.log", env=settings) as base:
        api = Api(base)
        eventually(lambda: api.replica_states() == ["down", "up"], "one standby down, one up")
        position = api.create("rr-other")
        for answer in (api.read("rr-other", at_least=position), api.read("rr-other")):
            assert (tag(answer), answer.headers[READ_FROM]) == ("gold", "standby-2")
    assert "standby-1" in (tmp_path / "serve.log").read_text()  # said once, with the reason


def test_read_url_needs_postgresql_urls(tmp_path: Path) -> None:
    """A wrong IDLEDGER_READ_URL stops `idledger serve` with one line, exit 2."""
    env = {
        **os.environ,
        "IDLEDGER_STORE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "IDLEDGER_READ_URL": "postgresql://postgres@127.0.0.1:1/test",
        "IDLEDGER_ADMIN_KEY": ADMIN_KEY,
    }
    idledger = str(Path(sys.executable).with_name("idledger"))
    done = subprocess.run(
        [idledger, "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "IDLEDGER_READ_URL needs a PostgreSQL store" in output
    assert "Traceback" not in output
    primary = "postgresql://postgres@db.example:5432/ledger?schema=s1"
    for wrong in ("mysql://127.0.0.1/test", "postgresql:///no-host", "standby:5432"):
        with pytest.raises(SettingsError, match="entry 2 is not a PostgreSQL server's URL"):
            read_store_envs(Settings(store_url=primary, read_url=f"postgresql://a:5433,{wrong}"))
    (standby,) = read_store_envs(Settings(store_url=primary, read_url=" postgresql://u:pw@b:5434 "))
    assert standby["POSTGRES_HOST"] == "b"
    assert standby["POSTGRES_PORT"] == "5434"
    assert standby["POSTGRES_DBNAME"] == "ledger"  # the store's, unless given
    assert standby["POSTGRES_SCHEMA"] == "s1"


def test_writes_tell_their_position_and_reads_check_theirs(tenant: Tenant) -> None:
    """Without standbys too: a write's answer carries its log position, a read may
    carry one (it is then answered as usual), and a malformed one is a 400."""
    created = tenant.post("/users", {"identity": {"external_id": "rr-bad"}})
    assert created.status_code == 201, created.text
    position = int(created.headers[POSITION])
    updated = tenant.patch("/users/by/external_id/rr-bad", {"properties": {"tags": {"a": "1"}}})
    assert updated.status_code == 202, updated.text
    assert int(updated.headers[POSITION]) > position > 0
    read = read_with(tenant, updated.headers[POSITION])
    assert read.status_code == 200
    assert read.json()["properties"]["tags"] == {"a": "1"}
    values: list[str | bytes] = ["abc", "-1", "1e3", " ", "99999999999999999999"]
    for value in [*values, "\u00b2".encode("latin-1")]:
        refused = read_with(tenant, value)
        assert refused.status_code == 400, (value, refused.text)
        (problem,) = refused.json()["errors"]
        assert (problem["field"], problem["code"]) == (MIN_POSITION, "invalid-value")


def read_with(tenant: Tenant, min_position: str | bytes) -> Any:
    headers = {**tenant.headers, MIN_POSITION: min_position}
    return tenant.client.get(tenant.url("/users/by/external_id/rr-bad"), headers=headers)
