"""The access log of a real `idledger serve`: route templates and status codes,
never the ids, aliases, tokens, addresses or tags that travel in paths and bodies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY, store_url
from tests.serving import free_port

PERSONAL = ("secret-alice-77", "alice77", "33612345678", "Lyon")
BY_ALIAS = "/apps/{app_id}/users/by/{alias_label}/{alias_id}"
ACCESS_LINE = re.compile(r" INFO idledger\.access (\S+) (\S+) (\S+) \d+\.\dms$")


class Server:
    """`idledger serve` on a free port, its stdout and stderr kept in one file."""

    def __init__(self, store: dict[str, str], log_path: Path) -> None:
        self.store = store
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[str] | None = None

    def start(self, *arguments: str) -> str:
        port = free_port()
        env = {
            **os.environ,
            "IDLEDGER_ADMIN_KEY": ADMIN_KEY,
            "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
            "IDLEDGER_STORE_URL": store_url(self.store),
        }
        env.pop("IDLEDGER_ACCESS_LOG", None)  # `serve` sets it from --[no-]access-log
        idledger = str(Path(sys.executable).with_name("idledger"))
        command = [idledger, "serve", "--port", str(port), *arguments]
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)

    def stop(self) -> str:
        """End the server and return everything it printed."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.log is not None:
            self.log.close()
        return self.log_path.read_text()


@pytest.fixture
def server(store: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    running = Server(store, tmp_path / "server.log")
    try:
        yield running
    finally:
        running.stop()


def access_lines(output: str) -> list[tuple[str, str, str]]:
    """(method, route template, status) of each access-log line."""
    lines = []
    for line in output.splitlines():
        found = ACCESS_LINE.search(line)
        if found:
            method, route, status = found.groups()
            lines.append((method, route, status))
    return lines


def drive(base: str) -> str:
    """Personal data in paths, bodies and responses; an unknown path; a bad key.
    Returns the app id."""
    admin = {"Authorization": f"Key {ADMIN_KEY}"}
    app = httpx.post(f"{base}/apps", json={"name": "access log"}, headers=admin).json()
    headers = {"Authorization": f"Key {app['basic_auth_key']}"}
    users = f"{base}/apps/{app['id']}/users"
    created = httpx.post(
        users,
        json={
            "identity": {"external_id": "secret-alice-77"},
            "properties": {"tags": {"city": "Lyon"}},
            "subscriptions": [
                {"type": "Email", "token": "alice77@example.org"},
                {"type": "SMS", "token": "+33612345678"},
            ],
        },
        headers=headers,
    )
    by_external_id = httpx.get(f"{users}/by/external_id/secret-alice-77", headers=headers)
    aliased = httpx.patch(
        f"{users}/by/external_id/secret-alice-77/identity",
        json={"identity": {"email_alias": "alice77@example.org"}},
        headers=headers,
    )
    by_email = httpx.get(f"{users}/by/email_alias/alice77%40example.org", headers=headers)
    unknown = httpx.get(f"{base}/no/such/path/secret-alice-77?email=alice77%40example.org")
    bad_key = httpx.get(
        f"{users}/by/external_id/secret-alice-77", headers={"Authorization": "Key wrong"}
    )

    assert created.status_code == 201, created.text
    assert by_external_id.status_code == 200
    assert by_external_id.json()["properties"]["tags"] == {"city": "Lyon"}
    assert aliased.status_code == 200
    assert by_email.status_code == 200
    assert by_email.json()["identity"]["external_id"] == "secret-alice-77"
    assert unknown.status_code == 404
    assert bad_key.status_code == 401
    return str(app["id"])


def test_the_access_log_names_routes_and_never_personal_data(server: Server) -> None:
    app_id = drive(server.start())
    output = server.stop()

    lines = access_lines(output)
    assert ("POST", "/apps", "200") in lines
    assert ("POST", "/apps/{app_id}/users", "201") in lines
    assert lines.count(("GET", BY_ALIAS, "200")) == 2  # by external_id, by email alias
    assert ("PATCH", BY_ALIAS + "/identity", "200") in lines
    assert ("GET", "<unmatched>", "404") in lines
    assert ("GET", BY_ALIAS, "401") in lines
    assert ("GET", "/ready", "200") in lines
    assert app_id not in output  # path parameters are never logged, not even the app id
    for value in PERSONAL:
        assert value not in output, f"{value!r} in the server's output:\n{output}"
    assert '"GET /apps' not in output  # uvicorn's own access log is off


def test_no_access_log_prints_no_access_line(server: Server) -> None:
    drive(server.start("--no-access-log"))
    output = server.stop()

    assert "idledger.access" not in output
    for value in PERSONAL:
        assert value not in output
