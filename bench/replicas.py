"""Read replicas: lookups with wrk against the primary alone and with one hot
standby taking the reads (IDLEDGER_READ_URL), in the same run on the same data;
then the read-your-writes read after a write (X-Idledger-Min-Position): its
latency, and how many such reads the standby answered in time.

`python -m bench.replicas [--quick]` prints the rows as a table; `python -m bench`
includes them (PostgreSQL only). The standby is a real one (pg_basebackup -R of the
benchmark's server, tests/private_postgres.py), made after the users are written so
that it starts with them, and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from uuid import UUID

import httpx

from bench.harness import POSTGRES_URL, Row, fresh_store, percentile, server
from bench.lookups import LUA, Load, seeded_users, wrk
from tests.private_postgres import HotStandby

WRITE_READ_ROUNDS = 300


def bench_replicas(
    kind: str, users: int, workers: int, connections: list[int], seconds: int
) -> list[Row]:
    if kind != "postgres":
        return []
    if shutil.which("wrk") is None:
        return [Row("replicas", kind, "lookups", "skipped: wrk is not installed (apt install wrk)")]
    with fresh_store(kind) as (env, url):
        app_id, ids, _ = seeded_users(env, users)
        with (
            HotStandby(POSTGRES_URL) as standby,
            server(url, workers) as (alone, _),
            server(url, workers, {"IDLEDGER_READ_URL": standby.url}) as (replicated, _),
        ):
            loads = compare(alone, replicated, app_id, ids, users, connections, seconds)
            ryw, eventual, from_standby = write_then_read(replicated, app_id)
    setting = f"{users:,} users, {workers} worker(s) each, wrk"
    rows = [
        Row("replicas", kind, f"GET user, {setting} {one.connections} connection(s), best of "
            f"{ROUNDS} alternated runs: primary alone / reads on one hot standby",
            f"{_load(one)} / {_load(two)}")
        for one, two in loads
    ]  # fmt: skip
    best_alone = max(one.rate for one, _ in loads)
    best_replicated = max(two.rate for _, two in loads)
    rows.append(Row("replicas", kind, "most lookups served: primary alone / one hot standby",
                    f"{best_alone:,.0f} / {best_replicated:,.0f} req/s",
                    ratio=f"{best_replicated / best_alone:.2f}"))  # fmt: skip
    rows.append(Row("replicas", kind, f"read-your-writes GET right after a PATCH (with "
                    f"X-Idledger-Min-Position), {WRITE_READ_ROUNDS} rounds, one hot standby",
                    f"p50 {percentile(ryw, 0.5):.1f} ms, p99 {percentile(ryw, 0.99):.1f} ms; "
                    f"{from_standby} of {WRITE_READ_ROUNDS} answered by the standby",
                    f"same GET without it: p50 {percentile(eventual, 0.5):.1f} ms, "
                    f"p99 {percentile(eventual, 0.99):.1f} ms"))  # fmt: skip
    return rows


ROUNDS = 3


def compare(
    alone: str, replicated: str, app_id: UUID, ids: list[str], users: int,
    connections: list[int], seconds: int,
) -> list[tuple[Load, Load]]:  # fmt: skip
    """Per connection count, the best of ``ROUNDS`` wrk runs on each server, taken
    in turns so that both meet the same machine (other load comes and goes)."""
    rotated = httpx.post(f"{alone}/apps/{app_id}/api_key", headers={"Authorization": "Key bench"})
    key = rotated.json()["basic_auth_key"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA.replace("APP", str(app_id)).replace("KEY", key)
                     .replace("USERS", str(users))
                     .replace("IDS", "{" + ",".join(f'"{i}"' for i in ids) + "}"))  # fmt: skip
    try:
        wait_for_standby(replicated)
        for base in (alone, replicated):  # warm the page caches and connection pools
            wrk(base, script.name, 4, seconds)
        best = []
        for count in connections:
            runs: dict[str, list[Load]] = {alone: [], replicated: []}
            for _ in range(ROUNDS):
                for base in runs:
                    runs[base].append(wrk(base, script.name, count, seconds))
            best.append((max(runs[alone], key=_rate), max(runs[replicated], key=_rate)))
        return best
    finally:
        os.unlink(script.name)


def _rate(load: Load) -> float:
    return load.rate


def wait_for_standby(base: str) -> None:
    """Until /ready says the standby is in use (its first probe succeeded)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replicas = httpx.get(f"{base}/ready", timeout=10).json().get("read_replicas", [{}])
        if replicas[0].get("state") == "up":
            return
        time.sleep(0.1)
    raise RuntimeError("the hot standby was not used within 60 s")


def _load(load: Load) -> str:
    failures = f", {load.failures} non-2xx" if load.failures else ""
    return f"{load.rate:,.0f} req/s (p99 {load.p99_ms:.2f} ms{failures})"


def write_then_read(base: str, app_id: UUID) -> tuple[list[float], list[float], int]:
    """Rounds of a PATCH followed at once by a GET carrying its position: the GET's
    milliseconds, those of the same GET without the position, and how many of the
    first the standby answered."""
    ryw: list[float] = []
    eventual: list[float] = []
    from_standby = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        key = client.post(f"/apps/{app_id}/api_key", headers={"Authorization": "Key bench"})
        headers = {"Authorization": f"Key {key.json()['basic_auth_key']}"}
        path = f"/apps/{app_id}/users/by/external_id/person-1"
        wait_for_standby(base)
        for number in range(WRITE_READ_ROUNDS):
            body = {"properties": {"tags": {"round": str(number)}}}
            written = client.patch(path, json=body, headers=headers)
            wanted = {**headers, "X-Idledger-Min-Position": written.headers["X-Idledger-Position"]}
            started = time.perf_counter()
            answer = client.get(path, headers=wanted)
            ryw.append((time.perf_counter() - started) * 1000)
            if answer.json()["properties"]["tags"]["round"] != str(number):
                raise RuntimeError("a read-your-writes read missed its write")
            from_standby += answer.headers.get("X-Idledger-Read-From", "") != "primary"
            started = time.perf_counter()
            client.get(path, headers=headers)
            eventual.append((time.perf_counter() - started) * 1000)
    return ryw, eventual, from_standby


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 users, 3 s per load")
    parser.add_argument("--workers", type=int, default=2)
    quick = parser.parse_args().quick
    rows = bench_replicas(
        "postgres", 10_000 if quick else 100_000, parser.parse_args().workers,
        [1, 4, 16], 3 if quick else 5,
    )  # fmt: skip
    print("| what | value | baseline | ratio |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row.what} | {row.value} | {row.baseline} | {row.ratio} |")


if __name__ == "__main__":
    main()
