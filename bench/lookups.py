"""User lookups over HTTP: the server run as in production, loaded by wrk from a
separate process; requests per second and p50 / p99 latency."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import INDEX_KEY, Row, fresh_store, ledger_for
from bench.replay_bench import synthesize
from projections.service import Projector, ReadModels

LUA = """
math.randomseed(os.time())
local ids = IDS
request = function()
  local path
  if math.random() < 0.5 then
    path = "/apps/APP/users/by/external_id/person-" .. math.random(0, USERS - 1)
  else
    path = "/apps/APP/users/by/onesignal_id/" .. ids[math.random(1, #ids)]
  end
  return wrk.format("GET", path, {["Authorization"] = "Key KEY"})
end
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def bench_lookups(kind: str, events: int, workers: int, seconds: int) -> list[Row]:
    if shutil.which("wrk") is None:
        return [
            Row("lookups", kind, "HTTP lookups", "skipped: wrk is not installed (apt install wrk)")
        ]
    with fresh_store(kind) as (env, url):
        ledger = ledger_for(env)
        synthesize(ledger, events)
        ledger.close()
        models = ReadModels(env)
        projector = Projector(models)
        projector.run_once()
        projector.release()
        # The synthesized users belong to the log's first app; look them up there.
        first_app = models.log.recorder.select_notifications(start=1, limit=1)[0].originator_id
        user_rows = models.profiles.all(
            "SELECT user_id FROM {profile_users} WHERE status = 'live' LIMIT 2000"
        )
        ids = [row["user_id"] for row in user_rows]
        users = models.profiles.one("SELECT COUNT(*) AS n FROM {profile_users}")["n"]  # type: ignore[index]
        models.close()
        return _load(url, kind, first_app, ids, users, workers, seconds)


def _load(
    url: str, kind: str, lookup_app: object, ids: list[str], users: int, workers: int, seconds: int
) -> list[Row]:
    port = _free_port()
    env = {**os.environ, "IDLEDGER_STORE_URL": url, "IDLEDGER_INDEX_KEY": INDEX_KEY.hex(),
           "IDLEDGER_ADMIN_KEY": "bench"}  # fmt: skip
    command = [str(Path(sys.executable).with_name("idledger")), "serve", "--port", str(port),
               "--workers", str(workers)]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        # The synthesized users live in the log's first app, whose key the harness
        # never saw: rotate it (organization key) to get one for the load generator.
        admin = {"Authorization": "Key bench"}
        rotated = httpx.post(f"{base}/apps/{lookup_app}/api_key", headers=admin)
        key = rotated.json()["basic_auth_key"]
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            lua_ids = "{" + ",".join(f'"{i}"' for i in ids) + "}"
            script.write(LUA.replace("APP", str(lookup_app)).replace("KEY", key)
                         .replace("USERS", str(users)).replace("IDS", lua_ids))  # fmt: skip
        result = subprocess.run(
            ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s", script.name, base],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        os.unlink(script.name)
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = result.stdout
    if "Requests/sec" not in output:
        raise RuntimeError(f"wrk failed: {result.stdout}{result.stderr}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return [
        Row("lookups", kind, f"GET user by external_id / onesignal_id, {users:,} users, "
            f"{workers} worker(s), wrk 2 threads x 16 connections",
            f"{rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            + (f", {errors.group(1)} non-2xx" if errors else ""), "", "", "p99 < 5 ms"),
    ]  # fmt: skip
