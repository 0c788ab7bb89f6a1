"""Projection lag under sustained ingest: events and seconds behind, sampled."""

from __future__ import annotations

import threading
import time

from bench.harness import Row, fresh_store, ledger_for, percentile
from bench.ingest import run_mix
from idledger.projections.service import Projector, ReadModels


def bench_lag(kind: str, rounds: int) -> list[Row]:
    with fresh_store(kind) as (env, _):
        ledger = ledger_for(env)
        models = ReadModels(env)
        projector = Projector(models, poll_interval=0.05)
        projector.start()
        events: list[float] = []
        seconds: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                behind = models.lag()
                events.append(max(lag.events for lag in behind.values()))
                seconds.append(max(lag.seconds for lag in behind.values()))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            run_mix(ledger, rounds)
        finally:
            done.set()
            sampler.join()
            projector.stop()
            models.close()
            ledger.close()
    return [
        Row("projection lag", kind, f"events behind while ingesting ({len(events)} samples)",
            f"p50 {percentile(events, 0.5):.0f}, p99 {percentile(events, 0.99):.0f}"),
        Row("projection lag", kind, "seconds behind while ingesting",
            f"p50 {percentile(seconds, 0.5):.3f}, p99 {percentile(seconds, 0.99):.3f}"),
    ]  # fmt: skip
