"""Partitions on the command line (``idledger.partitions``): `idledger partitions`
lists them; `idledger --partition K <verb>` runs any verb on partition K alone;
the verbs that name an app (`export --app`, `apps show|rotate-key`) find its
partition, `apps create` places a new app, and `project`, `replay` and `verify`
cover every partition.

A partition is a whole store, so every verb works on one as on any store; the
partition map comes from IDLEDGER_PARTITIONS and IDLEDGER_APP_PARTITIONS."""

from __future__ import annotations

import os
from uuid import UUID

from eventsourcing.utils import get_topic

from idledger.domain.app import AppCreated
from idledger.domain.errors import AppNotFound
from idledger.domain.service import LedgerLog
from idledger.partitions import PartitionMap
from idledger.replay.verb_support import (
    StoreMissing,
    StoreUrl,
    fail,
    opened_log,
    settings_for,
    show_table,
    store_environment,
    store_location,
)

PARTITIONS_VAR = "IDLEDGER_PARTITIONS"


def partition_map(store_url: str | None) -> PartitionMap:
    return PartitionMap.of(settings_for(store_url))


def partition_urls(store_url: str | None) -> list[str]:
    """Every partition's store URL (one: the store itself, without partitions)."""
    return list(partition_map(store_url).urls)


def choose_partition(number: int) -> None:
    """`idledger --partition K`: the verb's store is partition K's, alone."""
    urls = partition_urls(None)
    if not 0 <= number < len(urls):
        fail(f"--partition {number}: there are {len(urls)} partition(s) (0-{len(urls) - 1})", 2)
    os.environ["IDLEDGER_STORE_URL"] = urls[number]
    os.environ[PARTITIONS_VAR] = ""


def app_store_url(store_url: str | None, app_id: UUID) -> str:
    """The store URL of the partition holding ``app_id`` (its pin, else where its
    events are, the hashed partition first); ``AppNotFound`` if none holds it."""
    mapped = partition_map(store_url)
    if mapped.count == 1:
        return mapped.urls[0]
    for number in mapped.search_order(app_id):
        try:
            env = store_environment(mapped.urls[number])
        except StoreMissing:
            continue  # a partition not made yet holds no app
        with opened_log(env) as log:
            if log.recorder.select_events(app_id, limit=1):
                return mapped.urls[number]
    raise AppNotFound(str(app_id))


def new_app_store_url(store_url: str | None, app_id: UUID) -> str:
    """Where a new app with ``app_id`` goes (``app_id`` mod the number of partitions)."""
    mapped = partition_map(store_url)
    return mapped.urls[mapped.for_new_app(app_id)]


def partitions_command(store_url: StoreUrl = None) -> None:
    """List the partitions: number, store, events in the log, apps created there."""
    rows = []
    for number, url in enumerate(partition_urls(store_url)):
        try:
            env = store_environment(url)
        except StoreMissing:
            rows.append((str(number), store_location(url), "not made yet", "0"))
            continue
        with opened_log(env) as log:
            head = log.recorder.max_notification_id() or 0
            apps = _apps_created(log)
        rows.append((str(number), store_location(url), str(head), str(apps)))
    show_table("partitions", ("partition", "store", "log head", "apps"), rows)


def _apps_created(log: LedgerLog) -> int:
    count, start = 0, 1
    topics = [get_topic(AppCreated)]
    while page := log.recorder.select_notifications(start, 1000, topics=topics):
        count += len(page)
        start = page[-1].id + 1
    return count
