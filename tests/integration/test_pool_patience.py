"""A burst of requests that has every pooled connection at work must wait for
one (the server answers); a pool whose connections fail must still fail fast
(the store is down). domain/service.py `bound_pool_wait`."""

from __future__ import annotations

import threading
import time

import pytest
from psycopg_pool import ConnectionPool, PoolTimeout

from idledger.domain.service import DEFAULT_POOL_WAIT, _patient_while_busy

BUSY_WAIT = 30.0  # long, so that a wrong "busy" verdict on a dead pool cannot pass


def _pool(env: dict[str, str], conninfo: str | None = None) -> ConnectionPool:
    conninfo = conninfo or (
        f"host={env['POSTGRES_HOST']} port={env['POSTGRES_PORT']} "
        f"dbname={env['POSTGRES_DBNAME']} user={env['POSTGRES_USER']}"
    )
    pool = ConnectionPool(conninfo, min_size=1, max_size=1, timeout=DEFAULT_POOL_WAIT, open=False)
    _patient_while_busy(pool, BUSY_WAIT)
    return pool


def test_a_busy_pool_waits_for_a_connection(postgres_env: dict[str, str]) -> None:
    pool = _pool(postgres_env)
    pool.open(wait=True)
    try:
        held = threading.Event()

        def hold_the_only_connection() -> None:
            with pool.connection() as conn:
                held.set()
                conn.execute("SELECT pg_sleep(0.5)")

        holder = threading.Thread(target=hold_the_only_connection)
        holder.start()
        held.wait(5)
        # Longer than the pool's own 0.1 s wait, so without patience this times out.
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        holder.join()
    finally:
        pool.close()


def test_a_pool_that_cannot_connect_fails_fast(postgres_env: dict[str, str]) -> None:
    # A closed port: every connection attempt fails, the pool holds none.
    pool = _pool(postgres_env, "host=127.0.0.1 port=9 connect_timeout=1 user=postgres")
    pool.open(wait=False)
    try:
        began = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.getconn()
        # The pool's own short wait, not the long one kept for a busy pool.
        assert time.monotonic() - began < BUSY_WAIT / 2
    finally:
        pool.close(timeout=1)
