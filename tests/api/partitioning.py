"""What the partition tests share: a test store's partition stores (their
PostgreSQL schemas dropped after) and a new app placed in a chosen partition."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import httpx
import psycopg

from idledger.partitions import derived_url
from idledger.settings import store_env
from tests.api.conftest import ADMIN_KEY
from tests.conftest import POSTGRES_URL, store_url

PLACEMENT_TRIES = 64  # each new app lands in a given one of two partitions half the time


@contextmanager
def partition_stores(store: dict[str, str], count: int) -> Iterator[list[str]]:
    """The store URLs of ``count`` partitions of a test store (0 is the store)."""
    urls = [store_url(store)] + [derived_url(store_url(store), k) for k in range(1, count)]
    try:
        yield urls
    finally:
        if "POSTGRES_SCHEMA" in store:
            with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
                for url in urls[1:]:
                    schema = store_env(url)["POSTGRES_SCHEMA"]
                    connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def new_app(base: str, partition: int, partitions: int = 2) -> tuple[str, str]:
    """(id, REST API key) of a new app in ``partition``: apps are made until one lands
    there (a new app goes to app_id mod the number of partitions)."""
    for _ in range(PLACEMENT_TRIES):
        created = httpx.post(
            f"{base}/apps", json={"name": "partitioned"},
            headers={"Authorization": f"Key {ADMIN_KEY}"},
        )  # fmt: skip
        assert created.status_code == 200, created.text
        body = created.json()
        if UUID(body["id"]).int % partitions == partition:
            return body["id"], body["basic_auth_key"]
    raise AssertionError(f"{PLACEMENT_TRIES} new apps and none in partition {partition}")
