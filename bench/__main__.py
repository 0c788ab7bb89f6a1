"""`python -m bench [--quick]`: run every benchmark on SQLite and PostgreSQL and
write BENCHMARKS.md (figures, ratios to the baselines, machine, date, command)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import Row, machine
from bench.http_writes import bench_http_writes
from bench.ingest import bench_ingest
from bench.lag import bench_lag
from bench.lookups import bench_lookups
from bench.partitions import bench_partitions
from bench.privacy import bench_sealing
from bench.queries import bench_mau, bench_point_in_time
from bench.replay_bench import bench_replay
from bench.replicas import bench_replicas

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"rounds": 150, "replay": 10_000, "lookup_users": 10_000, "devices": 10,
              "pit": 2_000, "lag_rounds": 80, "workers": 2, "connections": [1, 4, 16],
              "wrk_seconds": 3, "sealing_replay": 10_000, "write_connections": [1, 8, 64]},
    "full": {"rounds": 1_000, "replay": 1_000_000, "lookup_users": 1_000_000, "devices": 40,
             "pit": 10_000, "lag_rounds": 500, "workers": 2, "connections": [1, 2, 4, 8, 16],
             "wrk_seconds": 10, "sealing_replay": 200_000, "write_connections": [1, 8, 64, 256]},
}  # fmt: skip


def plan(size: dict[str, Any], kind: str) -> list[tuple[str, Callable[[], list[Row]]]]:
    workers = 1 if kind == "sqlite" else size["workers"]
    return [
        ("ingest", lambda: bench_ingest(kind, size["rounds"])),
        ("privacy", lambda: bench_sealing(kind, size["rounds"], size["sealing_replay"])),
        ("replay", lambda: bench_replay(kind, size["replay"])),
        (
            "lookups",
            lambda: bench_lookups(
                kind, size["lookup_users"], workers, size["connections"], size["wrk_seconds"]
            ),
        ),
        (
            "write path",
            lambda: bench_http_writes(
                kind, size["write_connections"], size["wrk_seconds"], workers
            ),
        ),
        (
            "partitions",  # two apps writing at once over HTTP, partitions on and off
            lambda: bench_partitions(kind, size["wrk_seconds"], size["workers"]),
        ),
        (
            "read replicas",  # PostgreSQL only: a real hot standby (bench/replicas.py)
            lambda: bench_replicas(
                kind, min(size["lookup_users"], 100_000), workers, [1, 4, 16], size["wrk_seconds"]
            ),
        ),
        ("mau", lambda: bench_mau(kind, size["devices"])),
        ("lag", lambda: bench_lag(kind, size["lag_rounds"])),
        ("point in time", lambda: bench_point_in_time(kind, size["pit"])),
    ]


START, END = "<!-- figures: written by python -m bench -->", "<!-- end of figures -->"


def report(rows: list[Row], command: str, seconds: float) -> str:
    lines = [
        START,
        f"- Command: `{command}` ({seconds:,.0f} s in all)",
        f"- Machine: {machine()}",
        "- Baselines run in the same process, on the same store, just before the measurement.",
        "",
        "| section | store | what | idledger | baseline | ratio | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.section} | {r.store} | {r.what} | {r.value} | {r.baseline} | {r.ratio} | {r.goal} |"
        for r in rows
    ]
    return "\n".join([*lines, END])


def write(output: Path, figures: str) -> None:
    """Replace the figures in ``output``, keeping the written analysis around them."""
    text = output.read_text() if output.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + figures + after
    else:
        text = f"# Benchmarks\n\n{figures}\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument(
        "--sections", help="comma-separated section names (default: all); give --output too"
    )
    parser.add_argument(
        "--output", help="default: BENCHMARKS.md, or var/bench-quick.md with --quick"
    )
    args = parser.parse_args()
    if args.sections and not args.output:
        parser.error("--sections needs --output: BENCHMARKS.md's figures are a whole run")
    size = SIZES["quick" if args.quick else "full"]
    rows: list[Row] = []
    started = time.perf_counter()
    chosen = set(args.sections.split(",")) if args.sections else None
    for kind in args.stores.split(","):
        for name, run in plan(size, kind):
            if chosen is not None and name not in chosen:
                continue
            began = time.perf_counter()
            measured = run()
            rows.extend(measured)
            print(f"{kind:8} {name:14} {time.perf_counter() - began:6.1f} s", file=sys.stderr)
            for row in measured:
                print(f"         {row.what}: {row.value} {row.ratio}", file=sys.stderr)
    command = "make bench-quick" if args.quick else "make bench"
    if args.sections:
        command = f"python -m bench {'--quick ' if args.quick else ''}--sections {args.sections}"
    output = Path(args.output or ("var/bench-quick.md" if args.quick else "BENCHMARKS.md"))
    write(output, report(rows, command, time.perf_counter() - started))
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
