"""Many writers logging different subscriptions into one new external_id at the
same moment end with exactly one user owning all of them."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier as ProcessBarrier
from typing import Any
from uuid import UUID

import pytest

from idledger.domain.errors import ConcurrencyConflict
from idledger.domain.ledger import Ledger
from idledger.domain.service import MAX_ATTEMPTS
from tests.conftest import INDEX_KEY
from tests.helpers import device_user, ios

EXTERNAL_ID = "shared-person"


def login_until_done(
    ledger: Ledger, app_id: UUID, subscription_id: UUID, barrier: threading.Barrier | None
) -> tuple[UUID, int]:
    """Log in, retrying only on the ledger's one retryable error; count those."""
    if barrier is not None:
        barrier.wait()
    conflicts = 0
    while True:
        try:
            return ledger.login(app_id, subscription_id, EXTERNAL_ID).user_id, conflicts
        except ConcurrencyConflict:
            conflicts += 1


def assert_one_owner_of_all(ledger: Ledger, app_id: UUID, subscriptions: list[UUID]) -> UUID:
    owners = {ledger.owner_of(s, ledger.clock()) for s in subscriptions}
    assert len(owners) == 1
    (owner_id,) = owners
    assert owner_id is not None
    owner = ledger.read(app_id).user(owner_id)
    assert owner.external_id == EXTERNAL_ID
    assert set(owner.subscriptions) == set(subscriptions)
    return owner_id


@pytest.mark.parametrize("writers", [8])
def test_threads_logging_into_one_new_external_id_end_with_one_user(
    ledger: Ledger, writers: int
) -> None:
    app_id = ledger.create_app("race").app_id
    devices = [device_user(ledger, app_id, ios(f"phone-{i}")) for i in range(writers)]
    barrier = threading.Barrier(writers)

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(lambda d: login_until_done(ledger, app_id, d[1], barrier), devices))

    owner_id = assert_one_owner_of_all(ledger, app_id, [s for _, s in devices])
    assert {user_id for user_id, _ in results} == {owner_id}
    assert ledger.races_lost > 0, "the writers should have raced (else this test proves nothing)"
    retired = [u for u, _ in devices if u != owner_id]
    assert all(ledger.survivor_of(u) == owner_id for u in retired)


def _process_writer(
    env: dict[str, str], app_id: UUID, subscriptions: list[UUID], barrier: ProcessBarrier
) -> None:
    barrier.wait(timeout=60)  # workers start together, as API workers do
    ledger = Ledger(env, index_key=INDEX_KEY)
    try:
        barrier.wait(timeout=60)
        with ThreadPoolExecutor(len(subscriptions)) as pool:
            list(pool.map(lambda s: login_until_done(ledger, app_id, s, None), subscriptions))
    finally:
        ledger.close()


def test_processes_logging_into_one_new_external_id_end_with_one_user(
    postgres_env: dict[str, str],
) -> None:
    processes, threads_each = 4, 3
    ledger = Ledger(postgres_env, index_key=INDEX_KEY)
    try:
        app_id = ledger.create_app("race").app_id
        devices = [
            device_user(ledger, app_id, ios(f"p{i}")) for i in range(processes * threads_each)
        ]
        subscriptions = [s for _, s in devices]
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(processes)
        workers = [
            context.Process(
                target=_process_writer,
                args=(postgres_env, app_id, subscriptions[i::processes], barrier),
            )
            for i in range(processes)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
            if worker.is_alive():  # leave nothing holding the schema open
                worker.kill()
                worker.join()
        assert [w.exitcode for w in workers] == [0] * processes

        assert_one_owner_of_all(ledger, app_id, subscriptions)
    finally:
        ledger.close()


class OutracedLedger(Ledger):
    """Before each of its saves, a rival ledger on the same store changes the same
    user first, so every attempt loses the optimistic-concurrency race."""

    rival: Ledger
    target: tuple[UUID, UUID]

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        app_id, user_id = self.target
        self.rival.change_tags(app_id, user_id, {"rival": str(self.races_lost)})
        return super().save(*objs, **kwargs)


def test_a_command_that_keeps_losing_races_reports_a_retryable_conflict(
    store: dict[str, str],
) -> None:
    rival = Ledger(store, index_key=INDEX_KEY)
    app_id = rival.create_app("rivalry").app_id
    user_id = rival.create_user(app_id).user_id
    ledger = OutracedLedger(store, index_key=INDEX_KEY)
    ledger.rival, ledger.target = rival, (app_id, user_id)
    try:
        with pytest.raises(ConcurrencyConflict) as conflict:
            ledger.change_tags(app_id, user_id, {"mine": "1"})

        assert conflict.value.retryable
        assert ledger.races_lost == MAX_ATTEMPTS
        assert "mine" not in rival.read(app_id).user(user_id).tags
    finally:
        ledger.close()
        rival.close()
