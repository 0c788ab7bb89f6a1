"""Per-app partitions end to end: two apps creating users over HTTP at full rate
at once, each against its solo rate on the same servers in the same run.

The goal (the partitions issue): with partitions on, each app keeps at least 80%
of its solo throughput while the other writes. A Python server process is
CPU-bound, so two apps served by one process share its CPU however their events
are partitioned: what partitions change is the store (no shared write lock,
group-commit batch or projector) and, on SQLite, how many processes may serve
it. So the topologies measured are the deployed ones, named in each row:

- SQLite, partitions off: one ``idledger serve`` (``--workers`` > 1 is refused:
  one process per store file) serving both apps.
- SQLite, partitions on, one process: ``IDLEDGER_PARTITIONS=2``, the same single
  process serving both partitions (what partitions alone change).
- SQLite, partitions on, one process per partition: the apps placed by a
  partitioned server, then each partition's file served by its own process
  (store URL = that partition's file), each app's load sent to its process.
- PostgreSQL, partitions off and on: ``idledger serve --workers 2``.

Rounds alternate (each app alone, both at once, each app alone again) so the
noise of a shared machine shows in the two solo figures; the ratio is the rate
together over the mean of the app's two solo rates. Every round records the CPU
of each server process and of the whole machine (``/proc/stat``), which says
whether a shortfall is the store or the cores.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from bench.harness import ADMIN, POSTGRES_URL, Row, fresh_store, server
from bench.http_writes import CREATES_LUA, cpu_seconds, lua
from bench.lookups import Load, wrk
from idledger.partitions import derived_url
from idledger.settings import store_env

SECTION = "partitions"
SHARE_GOAL = 0.8
GOAL = f">= {SHARE_GOAL} of solo (partitions on)"
CONNECTIONS = 32  # per app: enough to saturate one server process alone
APPS = ("A", "B")
# The partition setting of every server started here, so that one set in the
# caller's environment never leaks into a "partitions off" run.
PARTITIONS_VAR = "IDLEDGER_PARTITIONS"


@dataclass(frozen=True)
class Target:
    """Where one app's load goes: its server's base URL and pid, and the app."""

    name: str
    base: str
    pid: int
    app_id: str
    key: str

    def script(self) -> str:
        # A new prefix per round: every request creates a new user (201).
        return (
            CREATES_LUA.replace("APP", self.app_id)
            .replace("KEY", self.key)
            .replace("RUN", uuid.uuid4().hex[:8])
        )


@dataclass(frozen=True)
class Round:
    """One timed round: each loaded app's wrk figures, and the CPU it cost."""

    loads: dict[str, Load]
    server_cores: tuple[float, ...]  # CPU of each server process (and its workers), in cores
    busy_cores: float  # the whole machine, wrk and PostgreSQL included
    postgres_cores: float | None  # every PostgreSQL backend (other clients' too), if the store

    def ok_rate(self, name: str, seconds: int) -> float:
        load = self.loads[name]
        return max(load.rate * seconds - load.failures, 0) / seconds

    def cpu_text(self, seconds: int) -> str:
        each = " + ".join(f"{cores:.2f}" for cores in self.server_cores)
        # Server CPU per create: flat between solo and together means the apps only
        # shared cores; a rise means they also got in each other's way (locks, batches).
        creates = max(sum(self.ok_rate(name, seconds) for name in self.loads), 1e-9) * seconds
        each_ms = 1000 * sum(self.server_cores) * seconds / creates
        postgres = "" if self.postgres_cores is None else f", PostgreSQL {self.postgres_cores:.2f}"
        return (
            f"server CPU {each} cores ({each_ms:.1f} ms per create){postgres}, machine "
            f"{self.busy_cores:.2f} of {os.cpu_count()} cores busy"
        )


@dataclass(frozen=True)
class Topology:
    label: str  # how the servers were run, for the row's text
    partitions: int
    per_partition_process: bool = False  # SQLite: one server process per partition file
    workers: int = 1
    goal: bool = False  # the goal applies (partitions on, processes to use them)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


def postmaster() -> int:
    """The PostgreSQL server's pid (its backends are its children, which is what
    ``cpu_seconds`` adds up): the parent of this connection's backend."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        # Read while connected: the backend exits when the connection closes.
        return int(Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])


def timed_round(targets: list[Target], seconds: int, postgres: int | None) -> Round:
    """wrk on each target at once (``CONNECTIONS`` each), started together; the CPU
    of the servers, of PostgreSQL (``postgres``: its pid) and of the machine."""
    pids = sorted({target.pid for target in targets})
    store_before = None if postgres is None else cpu_seconds(postgres)
    cpu_before = [cpu_seconds(pid) for pid in pids]
    busy_before, total_before = machine_ticks()
    with ExitStack() as stack, ThreadPoolExecutor(len(targets)) as pool:
        scripts = [stack.enter_context(lua(target.script())) for target in targets]
        runs = [
            pool.submit(wrk, target.base, script, CONNECTIONS, seconds)
            for target, script in zip(targets, scripts, strict=True)
        ]
        loads = {target.name: run.result() for target, run in zip(targets, runs, strict=True)}
    busy_after, total_after = machine_ticks()
    cpu_after = [cpu_seconds(pid) for pid in pids]
    store = None
    if postgres is not None and store_before is not None:
        store = (cpu_seconds(postgres) - store_before) / seconds
    # wrk runs for ``seconds``; the CPU is over the same span (and wrk's start).
    spent = zip(cpu_before, cpu_after, strict=True)
    server_cores = tuple((after - before) / seconds for before, after in spent)
    share = (busy_after - busy_before) / max(total_after - total_before, 1)
    return Round(loads, server_cores, share * (os.cpu_count() or 1), store)


def placed_apps(base: str) -> dict[str, tuple[str, str]]:
    """Two apps, A with ``app_id.int % 2 == 0`` and B with 1: with two partitions, A
    in partition 0 and B in partition 1 (a new app goes to ``app_id mod N``);
    {name: (app id, key)}."""
    found: dict[int, tuple[str, str]] = {}
    for number in range(64):  # each try lands on either side: 64 misses is 2**-63
        app = httpx.post(
            f"{base}/apps",
            json={"name": f"partition bench {number}"},
            headers={"Authorization": f"Key {ADMIN}"},
            timeout=30,
        ).json()
        found.setdefault(uuid.UUID(app["id"]).int % 2, (app["id"], app["basic_auth_key"]))
        if len(found) == 2:
            return {"A": found[0], "B": found[1]}
    raise RuntimeError("64 new apps all landed in one partition")


@contextmanager
def partitioned_store(kind: str) -> Iterator[str]:
    """A fresh store URL; on PostgreSQL the derived partition schema (``<schema>_p1``,
    made by the servers) is dropped after, as ``fresh_store`` drops the first."""
    with fresh_store(kind) as (_, url):
        try:
            yield url
        finally:
            schema = store_env(derived_url(url, 1)).get("POSTGRES_SCHEMA")
            if schema:  # None on SQLite: the derived file goes with the scratch directory
                with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
                    connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def targets_of(url: str, topology: Topology) -> Iterator[list[Target]]:
    """The servers of a topology, running, and where each app's load goes."""
    partitions = {PARTITIONS_VAR: str(topology.partitions) if topology.partitions > 1 else ""}
    with ExitStack() as stack:
        if topology.per_partition_process:
            # Placed by a partitioned server, then served one process per partition:
            # each process opens only its partition's file (its store URL), so no two
            # processes share an SQLite file.
            with server(url, 1, partitions) as (base, _):
                apps = placed_apps(base)
            alone = {PARTITIONS_VAR: ""}
            first = stack.enter_context(server(url, 1, alone))
            second = stack.enter_context(server(derived_url(url, 1), 1, alone))
            where = {"A": first, "B": second}
        else:
            shared = stack.enter_context(server(url, topology.workers, partitions))
            apps = placed_apps(shared[0])
            where = {"A": shared, "B": shared}
        yield [Target(name, *where[name], *apps[name]) for name in APPS]


def measure(url: str, topology: Topology, seconds: int) -> tuple[list[Round], Round]:
    """([solo A, solo B, solo A, solo B], together) on the topology's servers."""
    postgres = None if store_env(url).get("POSTGRES_SCHEMA") is None else postmaster()
    with targets_of(url, topology) as targets:
        for target in targets:  # warm up: imports, pools, caches, the partition lookup
            timed_round([target], 1, postgres)
        solo = [timed_round([target], seconds, postgres) for target in targets]
        together = timed_round(targets, seconds, postgres)
        solo += [timed_round([target], seconds, postgres) for target in targets]
    return solo, together


def row(kind: str, topology: Topology, seconds: int, solo: list[Round], together: Round) -> Row:
    alone = {name: [r for r in solo if name in r.loads] for name in APPS}
    ratios = {}
    value, baseline = [], []
    solo_rates: list[float] = []
    for name in APPS:
        rates = [r.ok_rate(name, seconds) for r in alone[name]]
        solo_rates += rates
        ratios[name] = together.ok_rate(name, seconds) / max(sum(rates) / len(rates), 1e-9)
        load = together.loads[name]
        failures = f", {load.failures} non-2xx" if load.failures else ""
        value.append(
            f"{name} {together.ok_rate(name, seconds):,.0f}/s (p99 {load.p99_ms:.0f} ms{failures})"
        )
        p99s = " / ".join(f"{r.loads[name].p99_ms:.0f}" for r in alone[name])
        cpu = " / ".join(r.cpu_text(seconds) for r in alone[name])
        baseline.append(
            f"{name} {' / '.join(f'{rate:,.0f}' for rate in rates)}/s (p99 {p99s} ms; {cpu})"
        )
    worst = min(ratios.values())
    # Both apps' creates together over one app's alone: about 1 when the servers were
    # already saturated by one app (the apps only split them), up to 2 when not.
    both = sum(together.ok_rate(name, seconds) for name in APPS)
    both_text = (
        f"A+B {both:,.0f}/s = {both / max(sum(solo_rates) / len(solo_rates), 1e-9):.2f}x one alone"
    )
    goal = ""
    if topology.goal:
        goal = f"{GOAL}: {'met' if worst >= SHARE_GOAL else 'not met'}"
    return Row(
        SECTION,
        kind,
        f"two apps creating users at once (POST /apps/{{app}}/users), wrk {CONNECTIONS} "
        f"connections each, {seconds} s rounds; {topology.label}; baseline: each app alone "
        "on the same servers, before and after",
        f"together: {', '.join(value)}; {both_text}; {together.cpu_text(seconds)}",
        "alone: " + "; ".join(baseline),
        f"{worst:.2f} ({', '.join(f'{name} {ratio:.2f}' for name, ratio in ratios.items())})",
        goal,
    )


def topologies(kind: str, workers: int) -> list[Topology]:
    if kind == "sqlite":
        return [
            Topology("partitions off: one `idledger serve` process (SQLite: one per store)", 1),
            Topology("partitions on (IDLEDGER_PARTITIONS=2, A in partition 0, B in 1): "
                     "the same single process serving both", 2),
            Topology("partitions on (IDLEDGER_PARTITIONS=2, A in partition 0, B in 1): one "
                     "`idledger serve` process per partition, each on its partition's file",
                     2, per_partition_process=True, goal=True),
        ]  # fmt: skip
    return [
        Topology(f"partitions off: `idledger serve --workers {workers}`", 1, workers=workers),
        Topology(f"partitions on (IDLEDGER_PARTITIONS=2, A in partition 0, B in 1): "
                 f"`idledger serve --workers {workers}`", 2, workers=workers, goal=True),
    ]  # fmt: skip


def bench_partitions(kind: str, seconds: int, workers: int = 2) -> list[Row]:
    if shutil.which("wrk") is None:
        return [Row(SECTION, kind, "two apps writing at once over HTTP",
                    "skipped: wrk is not installed (apt install wrk)")]  # fmt: skip
    rows = []
    for topology in topologies(kind, workers):
        with partitioned_store(kind) as url:
            solo, together = measure(url, topology, seconds)
        rows.append(row(kind, topology, seconds, solo, together))
    return rows


if __name__ == "__main__":  # python -m bench.partitions sqlite,postgres 5
    kinds = (sys.argv[1] if len(sys.argv) > 1 else "sqlite,postgres").split(",")
    for kind in kinds:
        for measured in bench_partitions(kind, int(sys.argv[2]) if len(sys.argv) > 2 else 5):
            print(" | ".join((measured.store, measured.what, measured.value, measured.baseline,
                              measured.ratio, measured.goal)), flush=True)  # fmt: skip
