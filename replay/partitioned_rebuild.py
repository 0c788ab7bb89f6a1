"""Rebuilding the read models of several partitions: each partition is a whole
store with its own log, so partitions rebuild independently, ``jobs`` of them at
once in their own processes (each reads its own log once for all its read
models); one partition shares its read models out among the jobs instead."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime

from idledger.replay.rebuild import Rebuilt, rebuild


def rebuild_partitions(
    envs: Sequence[dict[str, str]],
    names: list[str],
    heads: Sequence[int],
    *,
    until: datetime | None = None,
    jobs: int = 1,
    progress: Callable[[float], None] | None = None,
) -> list[list[Rebuilt]]:
    """Each partition's reports, in partition order (``heads``: each log's last
    position, for ``progress``, which hears of a partition's events when it is done)."""
    if len(envs) == 1:
        return [rebuild(envs[0], names, until=until, jobs=jobs, progress=progress)]
    if jobs == 1:
        return [rebuild(env, names, until=until, progress=progress) for env in envs]
    reports: list[list[Rebuilt]] = [[] for _ in envs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(envs)), mp_context=context) as pool:
        running = {
            pool.submit(rebuild, env, names, until=until): number for number, env in enumerate(envs)
        }
        for done in as_completed(running):
            number = running[done]
            reports[number] = done.result()
            if progress is not None:
                progress(heads[number])
    return reports
