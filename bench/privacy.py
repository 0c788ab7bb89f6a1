"""What sealing personal values costs: ingest and replay with sealing on against
the same work with it off (the format before sealing), same process, same run."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness import Row, fresh_store, ledger_for
from bench.ingest import run_mix
from bench.replay_bench import measure_rebuild, synthesize
from idledger.domain.ledger import Ledger


def _unsealed(ledger: Ledger) -> Ledger:
    """The previous format: the mapper writes personal values in plain text."""
    ledger.mapper.keyring = None  # type: ignore[attr-defined]
    return ledger


def _ingest(kind: str, rounds: int, sealed: bool) -> tuple[float, int]:
    with fresh_store(kind) as (env, _):
        ledger = ledger_for(env)
        if not sealed:
            _unsealed(ledger)
        try:
            seconds, per_command, _ = run_mix(ledger, rounds)
        finally:
            ledger.close()
    return seconds, len(per_command)


def _replay(kind: str, events: int, sealed: bool) -> tuple[float, int]:
    with fresh_store(kind) as (env, _):
        ledger = ledger_for(env)
        if not sealed:
            _unsealed(ledger)
        try:
            synthesize(ledger, events)
        finally:
            ledger.close()
        seconds, _, replayed, _ = measure_rebuild(env)
    return seconds, replayed


REPEATS = 5  # alternated, best of each: the 2-core machine's noise is larger than the cost


def _best(run: Callable[[bool], tuple[float, int]]) -> tuple[float, float, int]:
    """(best seconds unsealed, best seconds sealed, work done), runs alternated."""
    plain, sealed, work = [], [], 0
    for _ in range(REPEATS):
        seconds, work = run(False)
        plain.append(seconds)
        sealed.append(run(True)[0])
    return min(plain), min(sealed), work


def bench_sealing(kind: str, rounds: int, events: int) -> list[Row]:
    plain_seconds, sealed_seconds, commands = _best(lambda on: _ingest(kind, rounds, on))
    plain_replay, sealed_replay, replayed = _best(lambda on: _replay(kind, events, on))
    return [
        Row("privacy", kind, f"ingest commands/s with personal values sealed ({commands} "
            "commands); baseline: the same mix unsealed (the previous format)",
            f"{commands / sealed_seconds:,.0f}", f"{commands / plain_seconds:,.0f}",
            f"{plain_seconds / sealed_seconds:.2f}", ">= 0.85"),
        Row("privacy", kind, f"replay events/s, all 3 read models, sealed log ({replayed:,} "
            "events); baseline: the same log unsealed",
            f"{replayed / sealed_replay:,.0f}", f"{replayed / plain_replay:,.0f}",
            f"{plain_replay / sealed_replay:.2f}", ">= 0.75"),
    ]  # fmt: skip
