"""The logs of a real `idledger serve`: one JSON object per line (uvicorn's lines
too), request ids, route templates and status codes, never the ids, aliases,
tokens, addresses or tags that travel in paths, headers and bodies."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from idledger.api.access_log import RequestTelemetry
from idledger.api.log_setup import HumanFormatter, JsonFormatter
from idledger.api.main import create_app
from idledger.settings import Settings
from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY, store_url
from tests.serving import free_port

PERSONAL = ("secret-alice-77", "alice77", "33612345678", "Lyon", "alice.home")
BY_ALIAS = "/apps/{app_id}/users/by/{alias_label}/{alias_id}"
IDLEDGER = str(Path(sys.executable).with_name("idledger"))


class Server:
    """`idledger serve` on a free port, its standard output and error kept apart."""

    def __init__(self, store: dict[str, str], folder: Path) -> None:
        self.store = store
        self.stdout_path = folder / "stdout.log"
        self.stderr_path = folder / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.files: list[IO[str]] = []

    def start(self, *arguments: str, log_format: str | None = None) -> str:
        port = free_port()
        env = {
            **os.environ,
            "IDLEDGER_ADMIN_KEY": ADMIN_KEY,
            "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
            "IDLEDGER_STORE_URL": store_url(self.store),
        }
        for setting in ("IDLEDGER_ACCESS_LOG", "IDLEDGER_LOG_LEVEL", "IDLEDGER_LOG_FORMAT"):
            env.pop(setting, None)  # `serve` sets the first from --[no-]access-log
        if log_format is not None:
            env["IDLEDGER_LOG_FORMAT"] = log_format
        self.files = [self.stdout_path.open("w"), self.stderr_path.open("w")]
        self.process = subprocess.Popen(
            [IDLEDGER, "serve", "--port", str(port), *arguments],
            env=env,
            stdout=self.files[0],
            stderr=self.files[1],
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.stderr_path.read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)

    def stop(self) -> tuple[str, str]:
        """End the server; return its standard output and standard error."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        for file in self.files:
            file.close()
        return self.stdout_path.read_text(), self.stderr_path.read_text()


@pytest.fixture
def server(store: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    running = Server(store, tmp_path)
    try:
        yield running
    finally:
        running.stop()


def drive(base: str) -> dict[str, str]:
    """Personal data in paths, bodies, headers and responses; an unknown path; a
    bad key; a request id of the client's and one that is an address. Returns the
    app id and the request ids the responses carried."""
    admin = {"Authorization": f"Key {ADMIN_KEY}"}
    app = httpx.post(f"{base}/apps", json={"name": "logs"}, headers=admin).json()
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
        headers={**headers, "X-Request-Id": "trace-42"},
    )
    by_external_id = httpx.get(f"{users}/by/external_id/secret-alice-77", headers=headers)
    aliased = httpx.patch(
        f"{users}/by/external_id/secret-alice-77/identity",
        json={"identity": {"email_alias": "alice77@example.org"}},
        headers=headers,
    )
    by_email = httpx.get(
        f"{users}/by/email_alias/alice77%40example.org",
        headers={**headers, "X-Request-Id": "alice.home@example.org"},
    )
    unknown = httpx.get(f"{base}/no/such/path/secret-alice-77?email=alice77%40example.org")
    bad_key = httpx.get(
        f"{users}/by/external_id/secret-alice-77", headers={"Authorization": "Key wrong"}
    )

    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == "trace-42"
    assert by_external_id.status_code == 200
    assert by_external_id.json()["properties"]["tags"] == {"city": "Lyon"}
    assert aliased.status_code == 200
    assert by_email.status_code == 200
    assert by_email.json()["identity"]["external_id"] == "secret-alice-77"
    replaced = by_email.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", replaced)  # not an id: a fresh one instead
    assert unknown.status_code == 404
    assert bad_key.status_code == 401
    return {"app_id": app["id"], "replaced_request_id": replaced}


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of standard error from the first log line on, each of which
    must be one JSON object (the command may say a word before it starts serving,
    such as the store it creates: that is not a log line)."""
    text = stderr.splitlines()
    first = next(index for index, line in enumerate(text) if line.startswith("{"))
    lines = []
    for line in text[first:]:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "message"} <= entry.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
        lines.append(entry)
    return lines


def test_json_logs_name_routes_and_never_personal_data(server: Server) -> None:
    seen = drive(server.start(log_format="json"))
    stdout, stderr = server.stop()

    lines = json_lines(stderr)
    access = [line for line in lines if line["logger"] == "idledger.access"]
    summary = [(line["method"], line["route"], line["status"]) for line in access]
    assert ("POST", "/apps", 200) in summary
    assert ("POST", "/apps/{app_id}/users", 201) in summary
    assert summary.count(("GET", BY_ALIAS, 200)) == 2  # by external_id, by email alias
    assert ("PATCH", BY_ALIAS + "/identity", 200) in summary
    assert ("GET", "<unmatched>", 404) in summary
    assert ("GET", BY_ALIAS, 401) in summary
    assert ("GET", "/ready", 200) in summary
    for line in access:
        assert isinstance(line["duration_ms"], float)
        assert line["request_id"]
        assert line["message"].startswith(f"{line['method']} {line['route']} {line['status']} ")
    app_lines = [line for line in access if line["route"].startswith("/apps/{app_id}")]
    assert app_lines
    assert all(line["app_id"] == seen["app_id"] for line in app_lines)
    assert all("app_id" not in line for line in access if line["route"] == "<unmatched>")
    (create,) = [line for line in access if line["status"] == 201]
    assert create["request_id"] == "trace-42"  # the client's own id, kept
    assert sum(line["request_id"] == seen["replaced_request_id"] for line in access) == 1
    # uvicorn's own lines are JSON too; its access log (raw paths) is off.
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    assert ' HTTP/1.1"' not in stderr + stdout  # uvicorn's access line: "GET /path HTTP/1.1"
    for value in PERSONAL:
        assert value not in stderr + stdout, f"{value!r} in the server's output"


def test_no_access_log_prints_no_access_line(server: Server) -> None:
    drive(server.start("--no-access-log", log_format="json"))
    stdout, stderr = server.stop()

    assert not [line for line in json_lines(stderr) if line["logger"] == "idledger.access"]
    for value in PERSONAL:
        assert value not in stderr + stdout


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_human_format_is_one_readable_line_per_request(server: Server) -> None:
    drive(server.start(log_format="human"))
    _, stderr = server.stop()

    created = [line for line in stderr.splitlines() if " 201 " in line]
    assert len(created) == 1
    assert re.fullmatch(
        r"\S+ INFO idledger\.access POST /apps/\{app_id\}/users 201 \d+\.\dms "
        r"request_id=trace-42 app_id=[0-9a-f-]{36}",
        created[0],
    )
    for value in PERSONAL:
        assert value not in stderr


@pytest.mark.parametrize(
    ("setting", "value"), [("IDLEDGER_LOG_LEVEL", "LOUD"), ("IDLEDGER_LOG_FORMAT", "xml")]
)
def test_a_bad_log_setting_is_one_line_and_exit_2(setting: str, value: str) -> None:
    env = {**os.environ, setting: value}
    done = subprocess.run([IDLEDGER, "serve"], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"idledger serve: {setting}=")
    assert "choose one of" in line
    assert "Traceback" not in done.stderr + done.stdout


def test_a_log_line_inside_a_request_carries_its_request_id_and_route(
    settings: Settings,
) -> None:
    """A line written by a handler (in its worker thread) names the request it serves."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    probe_log = logging.getLogger("idledger.test_probe")
    probe_log.addHandler(handler)
    probe_log.setLevel(logging.INFO)
    app = create_app(settings)

    def probe(app_id: str, secret: str) -> dict[str, str]:  # noqa: ARG001 (a path parameter)
        probe_log.info("probing")
        return {}

    app.add_api_route("/apps/{app_id}/probe/{secret}", probe)
    app_id = "5cd0be59-6931-4c2d-affb-86a56785fefe"
    try:
        with TestClient(app) as client:
            response = client.get(
                f"/apps/{app_id}/probe/alice77", headers={"X-Request-Id": "req-7"}
            )
            client.get("/apps/not-an-app-id/probe/alice77")
    finally:
        probe_log.removeHandler(handler)

    assert response.status_code == 200
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "probing"
    assert first["request_id"] == "req-7"
    assert first["route"] == "/apps/{app_id}/probe/{secret}"
    assert first["app_id"] == app_id
    assert "app_id" not in second  # a path segment that is no app id is not logged
    assert "alice77" not in stream.getvalue()


def test_exceptions_are_logged_without_their_message() -> None:
    """Messages of store and validation errors can quote the values that caused them."""
    value = "-".join(("secret", "alice", "77"))  # the traceback quotes source lines
    try:
        raise ValueError(f"Key (external_id)=({value}) already exists")
    except ValueError:
        record = logging.getLogger("idledger.test").makeRecord(
            "idledger.test", logging.ERROR, __file__, 1, "write failed", (), sys.exc_info()
        )

    line = json.loads(JsonFormatter().format(record))
    human = HumanFormatter().format(record)

    assert line["message"] == "write failed"
    assert line["exc_type"] == "builtins.ValueError"
    assert "test_exceptions_are_logged_without_their_message" in line["stack"]
    assert "builtins.ValueError" in human
    assert value not in json.dumps(line) + human


def test_the_server_s_error_line_names_the_failed_request() -> None:
    """uvicorn logs an unhandled error in the request's own task, after the app
    raised: the request is still current then, so its line has the request id."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    server_log = logging.getLogger("idledger.test_server")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)

    async def failing(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise RuntimeError("boom")

    telemetry = RequestTelemetry(failing, access_log=False, count=False)
    scope: Scope = {
        "type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", b"r-500")],
    }  # fmt: skip

    async def serve_one() -> None:  # what uvicorn's request task does
        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            pass

        try:
            await telemetry(scope, receive, send)
        except RuntimeError:
            server_log.error("Exception in ASGI application", exc_info=True)

    try:
        asyncio.run(serve_one())
    finally:
        server_log.removeHandler(handler)

    (line,) = (json.loads(text) for text in stream.getvalue().splitlines())
    assert line["request_id"] == "r-500"
    assert line["exc_type"] == "builtins.RuntimeError"
