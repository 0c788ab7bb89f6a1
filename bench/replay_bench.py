"""Replay: events per second rebuilding every read model from the log alone, and
the rebuilding process's peak memory at two log sizes (it must not grow)."""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.harness import Row, fresh_store, ledger_for
from bench.synth import BatchWriter, identified_user
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.projections.engine import read_by_any
from idledger.projections.quarantine import decode
from idledger.projections.records import LogReader
from idledger.replay.rebuild import REBUILD_PAGE_SIZE, rebuild

NAMES = ["profiles", "ownership", "mau"]


def synthesize(ledger: Ledger, events: int) -> int:
    """Write a log of about ``events`` events shaped like real traffic: identified
    users with a push subscription, tags, and sessions every five days."""
    app_id = ledger.create_app("replay bench").app_id
    start = datetime(2024, 1, 1, tzinfo=UTC)
    writer = BatchWriter(ledger)
    number = 0
    while writer.written + len(writer.pending) < events:
        at = start + timedelta(minutes=number)
        user, push, claims = identified_user(ledger, app_id, number, at)
        user.change_tags({"plan": "gold", "cohort": str(number % 50)}, at)
        for day in range(6):
            push.record_session(30, at + timedelta(days=day * 5))
        writer.add(user, push, *claims)
        number += 1
    writer.flush()
    return writer.written


def read_and_decode(env: dict[str, str]) -> tuple[float, int]:
    """The baseline: read the whole log a page at a time and decode every event,
    applying nothing. No replay through the library can be faster than this."""
    log = LedgerLog(env)
    try:
        started = time.perf_counter()
        position, events = 0, 0
        while page := log.recorder.select_notifications(
            start=position + 1, limit=REBUILD_PAGE_SIZE
        ):
            decode(log, page)  # as the projector decodes: the page's keys read at once
            position, events = page[-1].id, events + len(page)
        return time.perf_counter() - started, events
    finally:
        log.close()


def read_as_replay_does(env: dict[str, str]) -> float:
    """Replay's own reading: rows selected straight from the log and payloads
    parsed once, without validation (``projections.records``); no read model."""
    log = LedgerLog(env)
    try:
        reader = LogReader(log, read_by_any)
        started = time.perf_counter()
        position = 0
        while rows := reader.rows(position + 1, REBUILD_PAGE_SIZE):
            reader.decode(rows)
            position = rows[-1][0]
        return time.perf_counter() - started
    finally:
        log.close()


def _rebuild_child(env: dict[str, str], jobs: int, results: Any) -> None:
    baseline_seconds, _ = read_and_decode(env)
    started = time.perf_counter()
    reports = rebuild(env, NAMES, jobs=jobs)
    seconds = time.perf_counter() - started
    # With jobs > 1 the rebuilding is done by child processes: the largest of them.
    usage = resource.RUSAGE_SELF if jobs == 1 else resource.RUSAGE_CHILDREN
    peak_kib = resource.getrusage(usage).ru_maxrss
    results.put((seconds, baseline_seconds, reports[0].events, peak_kib))


def measure_rebuild(env: dict[str, str], jobs: int = 1) -> tuple[float, float, int, int]:
    """In a fresh process, so that its peak memory is the rebuild's alone."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_rebuild_child, args=(env, jobs, results))
    child.start()
    outcome = results.get()
    child.join()
    seconds, baseline_seconds, events, peak_kib = outcome
    return seconds, baseline_seconds, events, peak_kib


def bench_replay(kind: str, events: int) -> list[Row]:
    rows = []
    peaks = []
    for size in (events // 2, events):
        with fresh_store(kind) as (env, _):
            ledger = ledger_for(env)
            try:
                written = synthesize(ledger, size)
            finally:
                ledger.close()
            seconds, baseline, replayed, peak_kib = measure_rebuild(env)
            reading = read_as_replay_does(env)
            parallel = measure_rebuild(env, jobs=2)[0] if size == events else None
        peaks.append(peak_kib)
        rows.append(
            Row("replay", kind, f"log events/s rebuilding all 3 read models ({replayed:,} events); "
                "baseline: reading and decoding the log alone",
                f"{replayed / seconds:,.0f}", f"{replayed / baseline:,.0f}",
                f"{baseline / seconds:.2f}", ">= 100,000 on SQLite"),
        )  # fmt: skip
        rows.append(
            Row("replay", kind, "reading the log as replay does (rows selected directly, "
                "payloads parsed once and not validated), no read model",
                f"{replayed / reading:,.0f}", f"{replayed / baseline:,.0f}",
                f"{baseline / reading:.2f}"),
        )  # fmt: skip
        if parallel is not None:
            rows.append(
                Row("replay", kind, "the same, the read models shared out among 2 processes "
                    "(`idledger replay --jobs 2`)", f"{replayed / parallel:,.0f}",
                    f"{replayed / baseline:,.0f}", f"{baseline / parallel:.2f}",
                    ">= 100,000 on SQLite"),
            )  # fmt: skip
        rows.append(
            Row("replay", kind, f"peak memory of the rebuilding process ({written:,} events)",
                f"{peak_kib / 1024:,.0f} MiB"),
        )  # fmt: skip
    growth = peaks[1] / peaks[0]
    rows.append(Row("replay", kind, "peak memory, twice the events / the events", f"{growth:.2f}",
                    "", "", "~1.0 (flat)"))  # fmt: skip
    return rows


def main() -> None:
    """`python -m bench.replay_bench`: the replay section alone, printed."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay_bench")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    for kind in args.stores.split(","):
        for row in bench_replay(kind, args.events):
            print(f"{row.store:8} {row.what}: {row.value} {row.baseline} {row.ratio}".rstrip())


if __name__ == "__main__":
    main()
