"""Ingest: commands and events per second through the application service, against
the raw driver inserting the same rows of the same size in the same transactions."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import psycopg

from bench.harness import Row, fresh_store, ledger_for
from idledger.domain.ledger import Ledger
from idledger.domain.values import SubscriptionSpec, SubscriptionType

T = TypeVar("T")


def run_mix(ledger: Ledger, rounds: int) -> tuple[float, list[int], int]:
    """The realistic mix: a device user with a push subscription, login, a tag
    change, a session ping, logout. Returns the seconds spent in the commands
    alone (not in the harness's bookkeeping), events per command, bytes per event."""
    app_id = ledger.create_app("bench").app_id
    per_command: list[int] = []
    head = ledger.recorder.max_notification_id() or 0
    seconds = 0.0

    def timed(command: Callable[[], T]) -> T:
        nonlocal seconds, head
        started = time.perf_counter()
        outcome = command()
        seconds += time.perf_counter() - started
        now = ledger.recorder.max_notification_id() or 0
        per_command.append(now - head)  # the baseline writes the same rows
        head = now
        return outcome

    for number in range(rounds):
        spec = SubscriptionSpec(type=SubscriptionType.IOS_PUSH, token=f"token-{number}")
        user_id = timed(partial(ledger.create_user, app_id, subscriptions=[spec])).user_id
        (push,) = ledger.read(app_id).user(user_id).subscriptions
        timed(partial(ledger.login, app_id, push, f"person-{number}"))
        timed(partial(ledger.change_tags, app_id, user_id, {"plan": "gold", "level": str(number)}))
        timed(partial(ledger.record_session, app_id, push, session_time=30))
        timed(partial(ledger.logout, app_id, push))
    sample = ledger.recorder.select_notifications(start=1, limit=1000)
    size = sum(len(n.state) for n in sample) // max(len(sample), 1)
    return seconds, per_command, size


def raw_sqlite(path: str, per_command: list[int], size: int) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(
        "CREATE TABLE raw (id INTEGER PRIMARY KEY AUTOINCREMENT, originator_id TEXT, "
        "version INTEGER, topic TEXT, state BLOB, UNIQUE (originator_id, version))"
    )
    payload = os.urandom(size)
    started = time.perf_counter()
    for rows in per_command:
        connection.execute("BEGIN")
        for version in range(rows):
            connection.execute(
                "INSERT INTO raw (originator_id, version, topic, state) VALUES (?, ?, ?, ?)",
                (uuid.uuid4().hex, version, "idledger.user:TagsChanged", payload),
            )
        connection.execute("COMMIT")
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


def raw_postgres(env: dict[str, str], per_command: list[int], size: int) -> float:
    from idledger.projections.lock import postgres_conninfo

    table = f'"{env["POSTGRES_SCHEMA"]}".raw'
    payload = os.urandom(size)
    with psycopg.connect(postgres_conninfo(env)) as connection:
        connection.execute(
            f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, originator_id UUID, "
            "version INTEGER, topic TEXT, state BYTEA, UNIQUE (originator_id, version))"
        )
        connection.commit()
        started = time.perf_counter()
        for rows in per_command:
            for version in range(rows):
                connection.execute(
                    f"INSERT INTO {table} (originator_id, version, topic, state) "
                    "VALUES (%s, %s, %s, %s)",
                    (uuid.uuid4(), version, "idledger.user:TagsChanged", payload),
                )
            connection.commit()
        return time.perf_counter() - started


def bench_ingest(kind: str, rounds: int) -> list[Row]:
    with fresh_store(kind) as (env, _):
        ledger = ledger_for(env)
        try:
            seconds, per_command, size = run_mix(ledger, rounds)
        finally:
            ledger.close()
        if kind == "sqlite":
            raw_path = env["SQLITE_DBNAME"].removesuffix(".db") + ".raw.db"
            raw_seconds = raw_sqlite(raw_path, per_command, size)
        else:
            raw_seconds = raw_postgres(env, per_command, size)
    commands, events = len(per_command), sum(per_command)
    ours, raw = events / seconds, events / raw_seconds
    return [
        Row("ingest", kind, f"commands/s, one transaction per command ({commands} commands)",
            f"{commands / seconds:,.0f}", f"{commands / raw_seconds:,.0f}",
            f"{seconds and raw_seconds / seconds:.2f}", ">= 0.5"),
        Row("ingest", kind, f"events/s ({events} events, {size} B each on average)",
            f"{ours:,.0f}", f"{raw:,.0f}", f"{ours / raw:.2f}", ">= 0.5"),
    ]  # fmt: skip
