"""The write path end to end: ``idledger serve`` in its own process, loaded by wrk
POSTing creates (a user with an external_id and an AndroidPush subscription, a
unique external_id and token per request) at 1, 8 and 64 connections. Reported:
creates/s, p50 / p99, and the server's CPU milliseconds per create, against the
same server answering ``GET /health`` at the same connections (what HTTP alone
costs). And the same creates in-process from 1, 8 and 64 threads, with group
commit and without (``IDLEDGER_GROUP_COMMIT_MAX=1``), so the two can be compared."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import ADMIN, INDEX_KEY, Row, fresh_store, percentile, server
from bench.ingest import raw_postgres, raw_sqlite
from bench.lookups import Load, wrk
from idledger.domain.group_commit import GroupCommitSettings
from idledger.domain.ledger import Ledger
from idledger.domain.values import SubscriptionSpec, SubscriptionType

# A unique external_id and token per request: the run's random prefix, wrk's
# thread number (set in setup) and a per-thread counter.
CREATES_LUA = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end
local counter = 0
local headers = {["Authorization"] = "Key KEY", ["Content-Type"] = "application/json"}
request = function()
  counter = counter + 1
  local id = "RUN-" .. number .. "-" .. counter
  local body = '{"identity":{"external_id":"' .. id .. '"},' ..
    '"subscriptions":[{"type":"AndroidPush","token":"token-' .. id .. '"}]}'
  return wrk.format("POST", "/apps/APP/users", headers, body)
end
"""
HEALTH_LUA = 'request = function() return wrk.format("GET", "/health") end\n'
# Group commit off: every command commits alone, as before it existed.
WITHOUT = {"IDLEDGER_GROUP_COMMIT_MAX": "1"}
USER_CREATED = "idledger.user:Created"
KEYS_PER_CREATE = 2  # a data key row for the new user and one for its subscription


@dataclass(frozen=True)
class Measured:
    load: Load
    ok_rate: float  # successful requests per second
    cpu_ms: float  # server CPU per successful request

    def text(self, what: str) -> str:
        load = self.load
        failures = f", {load.failures} non-2xx" if load.failures else ""
        return (
            f"{load.rate:,.0f} {what}/s, p50 {load.p50_ms:.1f} ms, p99 {load.p99_ms:.1f} ms, "
            f"{self.cpu_ms:.2f} ms CPU each{failures}"
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its worker processes, in seconds."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the command: state ppid ... utime (12th) stime (13th).
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measured(base: str, pid: int, script: str, connections: int, seconds: int) -> Measured:
    before = cpu_seconds(pid)
    load = wrk(base, script, connections, seconds)
    used = cpu_seconds(pid) - before
    ok = max(load.rate * seconds - load.failures, 1)
    return Measured(load, ok / seconds, 1000 * used / ok)


@contextmanager
def lua(source: str) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(source)
    try:
        yield script.name
    finally:
        os.unlink(script.name)


def http_ladder(
    url: str, workers: int, connections: list[int], seconds: int, env: dict[str, str]
) -> tuple[list[Measured], list[Measured]]:
    """(creates, health) at each number of connections, on one server."""
    with server(url, workers, env) as (base, pid):
        app = httpx.post(f"{base}/apps", json={"name": "write bench"},
                         headers={"Authorization": f"Key {ADMIN}"}).json()  # fmt: skip
        creates = CREATES_LUA.replace("APP", app["id"]).replace("KEY", app["basic_auth_key"])

        def load(source: str, n: int, seconds: int) -> Measured:
            # A new prefix per run: every request creates a new user (201).
            with lua(source.replace("RUN", uuid.uuid4().hex[:8])) as script:
                return measured(base, pid, script, n, seconds)

        load(creates, 4, 1)  # warm up: imports, connections, caches
        return (
            [load(creates, n, seconds) for n in connections],
            [load(HEALTH_LUA, n, seconds) for n in connections],
        )


def threaded_creates(ledger: Ledger, threads: int, seconds: float) -> tuple[float, float]:
    """Creates/s and p99 ms with ``threads`` callers creating users at once."""
    app_id = ledger.create_app("threads").app_id
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]
    run = uuid.uuid4().hex[:8]
    failures: list[str] = []

    def caller(number: int) -> None:
        count = 0
        while time.monotonic() < stop:
            count += 1
            name = f"{run}-{number}-{count}"
            spec = SubscriptionSpec(type=SubscriptionType.ANDROID_PUSH, token=f"token-{name}")
            began = time.perf_counter()
            try:
                ledger.create_user(app_id, external_id=name, subscriptions=[spec])
            except Exception as error:  # reported, never counted as a create
                failures.append(f"{type(error).__name__}: {error}")
                continue
            latencies[number].append(time.perf_counter() - began)

    started = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    every = [latency for per in latencies for latency in per]
    if failures:
        raise RuntimeError(f"{len(failures)} creates failed, the first: {failures[0]}")
    return len(every) / elapsed, 1000 * percentile(every, 0.99)


def in_process(
    kind: str, callers: list[int], seconds: float, rates: dict[tuple[int, bool], float]
) -> list[Row]:
    """Creates/s from threads sharing one ``Ledger``, group commit on and off, against
    the raw driver writing the same rows in transactions of a full batch; ``rates``
    gets each (threads, group commit on) rate, the HTTP rows' baselines."""
    rows = []
    settings = {"with": GroupCommitSettings(), "without": GroupCommitSettings(max_batch=1)}
    raw: float | None = None
    for n in callers:
        figures = {}
        for label, group_commit in settings.items():
            with fresh_store(kind) as (env, _):
                ledger = Ledger(env, index_key=INDEX_KEY, group_commit=group_commit)
                try:
                    figures[label] = threaded_creates(ledger, n, seconds)
                    if raw is None:
                        raw = raw_batched(kind, env, ledger, GroupCommitSettings().max_batch)
                finally:
                    ledger.close()
        (ours, p99), (alone, alone_p99) = figures["with"], figures["without"]
        rates[n, True], rates[n, False] = ours, alone
        rows.append(
            Row("write path", kind, f"creates/s in-process, {n} thread(s); baseline: group "
                "commit off (IDLEDGER_GROUP_COMMIT_MAX=1)",
                f"{ours:,.0f} (p99 {p99:.1f} ms)", f"{alone:,.0f} (p99 {alone_p99:.1f} ms)",
                f"{ours / alone:.2f}", ">= 10 at 64")
        )  # fmt: skip
        assert raw is not None
        rows.append(
            Row("write path", kind, f"creates/s in-process, {n} thread(s), group commit on; "
                f"baseline: the raw driver writing the same rows, "
                f"{GroupCommitSettings().max_batch} creates per transaction",
                f"{ours:,.0f}", f"{raw:,.0f}", f"{ours / raw:.2f}",
                ">= 0.5 at 64, p99 < 50 ms")
        )  # fmt: skip
    return rows


def raw_batched(kind: str, env: dict[str, str], ledger: Ledger, batch: int) -> float:
    """Creates/s of the raw driver inserting a create's rows (its events, of their
    average size, and its data keys) ``batch`` creates to a transaction."""
    apps = 1
    users = len(ledger.recorder.select_notifications(1, 1_000_000, topics=[USER_CREATED]))
    events = (ledger.recorder.max_notification_id() or 0) - apps
    sample = ledger.recorder.select_notifications(start=2, limit=1000)
    size = sum(len(n.state) for n in sample) // max(len(sample), 1)
    per_create = round(events / max(users, 1)) + KEYS_PER_CREATE
    transactions = [per_create * batch] * max(users // batch, 10)
    if kind == "sqlite":
        path = env["SQLITE_DBNAME"].removesuffix(".db") + ".raw.db"
        seconds = raw_sqlite(path, transactions, size)
    else:
        seconds = raw_postgres(env, transactions, size)
    return batch * len(transactions) / seconds


def bench_http_writes(
    kind: str, connections: list[int], seconds: int, workers: int = 1
) -> list[Row]:
    rates: dict[tuple[int, bool], float] = {}
    rows = in_process(kind, connections, min(seconds, 5), rates)
    if shutil.which("wrk") is None:
        return [*rows, Row("write path", kind, "HTTP creates",
                           "skipped: wrk is not installed (apt install wrk)")]  # fmt: skip
    goal = ">= 1,500/s at 64" if kind == "sqlite" else ">= 1,000/s at 64"
    for label, env in (("", {}), (" (group commit off)", WITHOUT)):
        with fresh_store(kind) as (_, url):
            creates, health = http_ladder(url, workers, connections, seconds, env)
        for create, ping in zip(creates, health, strict=True):
            n = create.load.connections
            layer = rates[n, not label]
            rows.append(
                Row("write path", kind, f"POST /apps/{{app}}/users (external_id + AndroidPush)"
                    f"{label}, {workers} worker(s), wrk {n} connection(s) (GET /health on the "
                    f"same server: {ping.ok_rate:,.0f} req/s); baseline: the same creates "
                    f"in-process, {n} thread(s)", create.text("creates"), f"{layer:,.0f}",
                    f"{create.ok_rate / layer:.2f}", f"{goal}, >= 0.5" if not label else "")
            )  # fmt: skip
    return rows


if __name__ == "__main__":  # python -m bench.http_writes sqlite 1,8,64 5
    kind = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    ladder = [int(n) for n in (sys.argv[2] if len(sys.argv) > 2 else "1,8,64").split(",")]
    for row in bench_http_writes(kind, ladder, int(sys.argv[3]) if len(sys.argv) > 3 else 5):
        print(f"{row.store} | {row.what} | {row.value} | {row.baseline} | {row.ratio}")
