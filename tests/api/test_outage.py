"""PostgreSQL outages under a real `idledger serve` process, on a private PostgreSQL
server (tests/private_postgres.py) that the tests stop and start at will.

The contract: while the store is down every request answers within 5 s, /health
says 200 and /ready 503, reads and writes answer 2xx or 503 (with Retry-After and
OneSignal's error body), never 404 or another 5xx; once the store is back idledger
recovers by itself within 15 s, and every write it acknowledged (201) is there.
Started against a store that is down, `idledger serve` waits up to
IDLEDGER_STARTUP_TIMEOUT, then exits with one clear line and no traceback.

Part of the PostgreSQL half: without IDLEDGER_TEST_POSTGRES these tests are left
out like the others (they use the ``postgres_env`` fixture for that reason only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY
from tests.conftest import INDEX_KEY
from tests.private_postgres import PrivatePostgres, free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.usefixtures("postgres_env")]

WRITERS = 4
CLIENT_TIMEOUT = 8.0  # httpx's; the contract is an answer within ANSWER_WITHIN
ANSWER_WITHIN = 5.0
OUTAGE_SECONDS = 6.0
PROBE_EVERY = 0.3
RECOVER_WITHIN = 15.0
WRITE_AGAIN_WITHIN = 20.0
TRACEBACK = "Traceback (most recent call last)"
ADMIN = {"Authorization": f"Key {ADMIN_KEY}"}


@dataclass
class Server:
    """A real `idledger serve` process; its stdout and stderr go to ``log_path``."""

    process: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self, tail: int = 8_000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-tail:]

    def explain(self) -> str:
        return f"\n--- {self.log_path} (tail) ---\n{self.log()}"


@contextmanager
def serve(store_url: str, log_path: Path, **settings: str) -> Iterator[Server]:
    """`idledger serve` on a free port of 127.0.0.1 against ``store_url``; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "IDLEDGER_STORE_URL": store_url,
        "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
        "IDLEDGER_ADMIN_KEY": ADMIN_KEY,
        **{f"IDLEDGER_{name.upper()}": value for name, value in settings.items()},
    }
    idledger = str(Path(sys.executable).with_name("idledger"))
    command = [idledger, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield Server(process, f"http://127.0.0.1:{port}", log_path)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


def http_client(server: Server) -> httpx.Client:
    # trust_env=False: no proxy from the environment; traffic stays on 127.0.0.1
    return httpx.Client(base_url=server.base, timeout=CLIENT_TIMEOUT, trust_env=False)


def wait_ready(server: Server, client: httpx.Client, within: float) -> float:
    """Seconds until /ready answers 200; fails if the process exits or time runs out."""
    began = time.monotonic()
    while True:
        try:
            if client.get("/ready", timeout=1).status_code == 200:
                return time.monotonic() - began
        except httpx.TransportError:
            pass
        assert server.alive(), f"idledger exited ({server.process.returncode}){server.explain()}"
        assert time.monotonic() - began < within, (
            f"/ready not 200 within {within} s{server.explain()}"
        )
        time.sleep(0.1)


@dataclass(frozen=True)
class Answer:
    """One request: what it was, when it started (monotonic), how long it took, and
    what came back (``status`` None: no answer at all, ``error`` says why)."""

    what: str
    target: str
    started: float
    elapsed: float
    status: int | None
    retry_after: str | None = None
    body: str = ""
    error: str = ""

    def __str__(self) -> str:
        answer = self.error if self.status is None else f"{self.status} {self.body[:200]}"
        return f"{self.what} {self.target} after {self.elapsed:.2f} s: {answer}"


def ask(client: httpx.Client, what: str, method: str, url: str, **kwargs: Any) -> Answer:
    started = time.monotonic()
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as error:
        return Answer(what, url, started, time.monotonic() - started, None, error=repr(error))
    return Answer(
        what, url, started, time.monotonic() - started, response.status_code,
        response.headers.get("retry-after"), response.text,
    )  # fmt: skip


def unavailable_problem(answer: Answer) -> str | None:
    """What is wrong with a 503 of a read or write, or None: it must carry Retry-After
    and the body ``{"errors": [{"code": ..., "title": ...}]}``."""
    if not answer.retry_after:
        return f"503 without Retry-After: {answer}"
    try:
        errors = httpx.Response(200, content=answer.body).json()["errors"]
        if errors and all("code" in item and "title" in item for item in errors):
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"503 without an errors body of code and title: {answer}"


def read_write_problems(answers: list[Answer]) -> list[str]:
    """Reads and writes answer 2xx or 503, a 503 as ``unavailable_problem`` says."""
    problems = []
    for answer in answers:
        if answer.status is None or not (200 <= answer.status < 300 or answer.status == 503):
            problems.append(f"neither 2xx nor 503: {answer}")
        elif answer.status == 503 and (problem := unavailable_problem(answer)):
            problems.append(problem)
    return problems


@dataclass
class Writers:
    """Client threads creating users with fresh external_ids in a loop, every write
    recorded (``target`` is its external_id); they stop when told to or at ``deadline``."""

    base: str
    path: str
    headers: dict[str, str]
    deadline: float
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, count: int) -> None:
        for number in range(count):
            thread = threading.Thread(target=self._write, args=(number,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _write(self, number: int) -> None:
        with httpx.Client(base_url=self.base, timeout=CLIENT_TIMEOUT, trust_env=False) as client:
            sequence = 0
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                external_id = f"w{number}-{sequence}-{uuid.uuid4().hex[:8]}"
                body = {"identity": {"external_id": external_id}}
                answer = ask(client, "write", "POST", self.path, json=body, headers=self.headers)
                with self.lock:
                    self.answers.append(replace(answer, target=external_id))
                sequence += 1
                self.stop.wait(0.05)

    def snapshot(self) -> list[Answer]:
        with self.lock:
            return list(self.answers)

    def succeeded_since(self, instant: float) -> bool:
        return any(w.status == 201 and w.started >= instant for w in self.snapshot())

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 2)


@dataclass
class Observed:
    """What the outage test saw; ``down_at``/``back_at`` are monotonic instants."""

    down_at: float = 0.0
    back_at: float = 0.0
    probes: list[Answer] = field(default_factory=list)
    writes: list[Answer] = field(default_factory=list)
    recovery: list[Answer] = field(default_factory=list)
    ready_after: float | None = None
    read_back: Answer | None = None
    lost: list[str] = field(default_factory=list)

    @property
    def writes_in_outage(self) -> list[Answer]:
        return [
            w
            for w in self.writes
            if w.started <= self.back_at and w.started + w.elapsed >= self.down_at
        ]

    def problems(self) -> list[str]:
        """Every way the run broke the contract (all of them, to fix in one go)."""
        probes, in_outage = self.probes, self.writes_in_outage
        problems = [
            f"no answer within {ANSWER_WITHIN} s in the outage: {a}"
            for a in probes + in_outage
            if a.status is None or a.elapsed >= ANSWER_WITHIN
        ]
        for probe in probes:
            if probe.what == "health" and probe.status != 200:
                problems.append(f"/health not 200 in the outage: {probe}")
            if probe.what == "ready" and probe.status != 503:
                problems.append(f"/ready not 503 in the outage: {probe}")
        reads = [a for a in probes if a.what == "read"]
        problems += read_write_problems(reads + self.writes + self.recovery)
        if not any(w.status == 201 and w.started < self.down_at for w in self.writes):
            problems.append("no write succeeded before the outage (the test saw no traffic)")
        if not any(w.status == 503 for w in in_outage):
            problems.append("no write answered 503 during the outage")
        if self.ready_after is None:
            problems.append(f"/ready not 200 within {RECOVER_WITHIN} s of PostgreSQL's return")
        elif not self.recovery or self.recovery[-1].status != 201:
            tried = "; ".join(str(a) for a in self.recovery[-3:])
            problems.append(f"no create answered 201 within {RECOVER_WITHIN} s: {tried}")
        elif self.read_back is None or self.read_back.status != 200:
            problems.append(f"the create after the outage does not read back: {self.read_back}")
        if not any(w.status == 201 and w.started >= self.back_at for w in self.writes):
            problems.append(f"the writers did not succeed again within {WRITE_AGAIN_WITHIN} s")
        problems += [f"acknowledged (201) but missing afterwards: {gone}" for gone in self.lost]
        return problems

    def summary(self) -> str:
        statuses: dict[str, int] = {}
        for write in self.writes:
            statuses[str(write.status)] = statuses.get(str(write.status), 0) + 1
        after: dict[str, int] = {}
        for write in self.writes:
            if write.started >= self.back_at:
                after[str(write.status)] = after.get(str(write.status), 0) + 1
        in_outage = self.probes + self.writes_in_outage
        slowest = max(in_outage, key=lambda a: a.elapsed) if in_outage else None
        return (
            f"writes by status {statuses} ({after} of them after PostgreSQL's return),"
            f" {len(self.probes)} probes, slowest answer in the outage: {slowest};"
            f" /ready 200 {self.ready_after} s after PostgreSQL's return;"
            f" {statuses.get('201', 0)} acknowledged and {len(self.lost)} of them missing"
        )


def test_an_outage_answers_fast_and_idledger_recovers_without_losing_writes(
    tmp_path: Path,
) -> None:
    seen = Observed()
    with (
        PrivatePostgres() as postgres,
        serve(postgres.url, tmp_path / "server.log", store_timeout="2") as server,
        http_client(server) as client,
    ):
        wait_ready(server, client, within=30)
        created_app = client.post("/apps", json={"name": "outage"}, headers=ADMIN)
        assert created_app.status_code == 200, created_app.text + server.explain()
        app = created_app.json()
        headers = {"Authorization": f"Key {app['basic_auth_key']}"}
        users = f"/apps/{app['id']}/users"

        def create(external_id: str) -> Answer:
            body = {"identity": {"external_id": external_id}}
            return ask(client, "write", "POST", users, json=body, headers=headers)

        def read(external_id: str) -> Answer:
            url = f"{users}/by/external_id/{external_id}"
            return ask(client, "read", "GET", url, headers=headers)

        assert create("before-outage").status == 201, server.explain()
        assert read("before-outage").status == 200, server.explain()

        writers = Writers(server.base, users, headers, deadline=time.monotonic() + 60)
        writers.start(WRITERS)
        try:
            time.sleep(1.5)
            seen.down_at = time.monotonic()
            postgres.stop("immediate")
            while time.monotonic() - seen.down_at < OUTAGE_SECONDS:
                seen.probes.append(ask(client, "health", "GET", "/health"))
                seen.probes.append(ask(client, "ready", "GET", "/ready"))
                seen.probes.append(read("before-outage"))
                time.sleep(PROBE_EVERY)
            postgres.start()
            seen.back_at = time.monotonic()

            # Recovery without restarting idledger: /ready 200, then a create reads back.
            after_outage = f"after-outage-{uuid.uuid4().hex[:8]}"
            while time.monotonic() - seen.back_at < RECOVER_WITHIN:
                if seen.ready_after is None:
                    if ask(client, "ready", "GET", "/ready").status == 200:
                        seen.ready_after = round(time.monotonic() - seen.back_at, 2)
                else:
                    seen.recovery.append(create(after_outage))
                    if seen.recovery[-1].status == 201:
                        seen.read_back = read(after_outage)
                        break
                time.sleep(0.2)

            # The writers keep going until one of them succeeds again.
            while time.monotonic() - seen.back_at < WRITE_AGAIN_WITHIN:
                if writers.succeeded_since(seen.back_at):
                    break
                time.sleep(0.2)
        finally:
            writers.join()
        seen.writes = writers.snapshot()

        # Every acknowledged write is there.
        check_until = time.monotonic() + 20
        for write in seen.writes:
            if write.status != 201:
                continue
            if time.monotonic() > check_until:
                seen.lost.append(f"{write.target} (not checked: out of time)")
            elif (found := read(write.target)).status != 200:
                seen.lost.append(str(found))

        problems = seen.problems()
        if not server.alive():
            problems.append(f"idledger exited ({server.process.returncode}); it must not restart")
        if TRACEBACK in server.log(tail=10_000_000):
            problems.append("the server log holds a Python traceback")
        print(f"\n{seen.summary()}")
        shown = problems[:40] + [f"... {len(problems) - 40} more"] * (len(problems) > 40)
        assert not problems, "\n".join([seen.summary(), *shown]) + server.explain()


def test_serve_with_the_store_down_exits_with_one_clear_line(tmp_path: Path) -> None:
    with PrivatePostgres() as postgres:
        postgres.stop("immediate")
        began = time.monotonic()
        settings = {"startup_timeout": "2", "store_timeout": "2"}
        with serve(postgres.url, tmp_path / "server.log", **settings) as server:
            try:
                code: int | None = server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - began
    assert code is not None, f"still running 15 s after starting, store down{server.explain()}"
    assert code != 0, f"exited 0 after {took:.1f} s although the store is down{server.explain()}"
    log = server.log()
    assert TRACEBACK not in log, server.explain()
    port = str(postgres.port)
    clear = [line for line in log.splitlines() if "unreachable" in line.lower() and port in line]
    assert clear, (
        f"no line says the store (port {port}) is unreachable; exit {code} after {took:.1f} s"
        + server.explain()
    )


def test_serve_waits_for_the_store_to_come_up(tmp_path: Path) -> None:
    with PrivatePostgres() as postgres:
        postgres.stop("immediate")
        settings = {"startup_timeout": "20", "store_timeout": "2"}
        with (
            serve(postgres.url, tmp_path / "server.log", **settings) as server,
            http_client(server) as client,
        ):
            time.sleep(3)
            assert server.alive(), f"gave up before IDLEDGER_STARTUP_TIMEOUT{server.explain()}"
            postgres.start()
            waited = wait_ready(server, client, within=20)
            assert server.alive(), server.explain()
            assert TRACEBACK not in server.log(tail=10_000_000), server.explain()
            print(f"\n/ready 200 {waited:.2f} s after PostgreSQL started")
