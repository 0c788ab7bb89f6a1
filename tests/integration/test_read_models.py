"""The read models answer from the log, on each store, exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from uuid import UUID

import pytest
from eventsourcing.projection import ProjectionRunner as LibraryProjectionRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idledger.domain.errors import SubscriptionNotFound
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.domain.subscription import Subscription
from idledger.projections.lock import ProjectionBusy
from idledger.projections.profiles import PostgresProfilesView, ProfilesProjection
from idledger.projections.service import Projector, ReadModels
from idledger.projections.state import subscription_to_json, user_to_json
from tests.commands import Step, play, step
from tests.conftest import INDEX_KEY, FakeClock, fresh_store
from tests.helpers import caught_up, device_user, ios, web


@pytest.fixture
def models(store: dict[str, str]) -> Iterator[ReadModels]:
    opened = ReadModels(store)
    yield opened
    opened.close()


def test_profiles_are_found_by_every_identity(ledger: Ledger, models: ReadModels) -> None:
    app_id = ledger.create_app("lookups").app_id
    user_id, push = device_user(ledger, app_id, ios("phone"))
    ledger.login(app_id, push, "EIDA")
    ledger.add_aliases(app_id, user_id, {"crm": "42"})

    profiles = caught_up(models).profiles

    for label, alias_id in [("onesignal_id", str(user_id)), ("external_id", "EIDA"), ("crm", "42")]:
        found = profiles.user_by_alias(app_id, label, alias_id)
        assert found is not None
        assert found.id == user_id
    subscription = profiles.subscription(app_id, push)
    assert subscription is not None
    assert subscription.owner_id == user_id
    assert [s.id for s in profiles.subscriptions_of(app_id, user_id)] == [push]
    assert profiles.user_by_alias(app_id, "crm", "43") is None
    assert profiles.user_by_alias(app_id, "onesignal_id", "not-a-uuid") is None
    other_app = ledger.create_app("other").app_id
    assert profiles.user(other_app, user_id) is None


def test_retired_and_deleted_users_leave_lookups_but_not_history(
    ledger: Ledger, models: ReadModels
) -> None:
    app_id = ledger.create_app("retire").app_id
    survivor, web_push = device_user(ledger, app_id, web("w"))
    retired, phone = device_user(ledger, app_id, ios("p"))
    ledger.login(app_id, web_push, "EIDA")
    ledger.login(app_id, phone, "EIDA")
    deleted = ledger.create_user(app_id, external_id="gone", subscriptions=[ios("q")]).user_id
    ledger.delete_user(app_id, deleted)

    caught_up(models)

    assert models.profiles.user(app_id, retired) is None
    assert models.profiles.merged_into(retired) == survivor
    assert models.profiles.user(app_id, deleted) is None
    assert models.profiles.user_by_alias(app_id, "external_id", "gone") is None
    assert [i.owner_id for i in models.ownership.timeline(app_id, phone)] == [retired, survivor]
    assert {s for s, _ in models.ownership.owned_by(app_id, retired)} == {phone}


def test_catching_up_twice_applies_nothing_twice(ledger: Ledger, models: ReadModels) -> None:
    app_id = ledger.create_app("twice").app_id
    _, push = device_user(ledger, app_id, ios("p"))
    ledger.record_session(app_id, push)
    projector = Projector(models)

    first = projector.run_once()
    second = projector.run_once()
    projector.release()

    head = ledger.recorder.max_notification_id() or 0
    assert (first, second) == (head, 0)
    assert models.mau.mau(app_id, ledger.clock().date()) == {"iOSPush": 1}
    assert all(lag.events == 0 for lag in models.lag().values())


def test_only_one_runner_may_own_a_read_model(store: dict[str, str]) -> None:
    first, second = ReadModels(store, ["mau"]), ReadModels(store, ["mau"])
    owner, rival = Projector(first), Projector(second)
    try:
        owner.acquire()
        with pytest.raises(ProjectionBusy, match="'mau' is already being projected"):
            rival.acquire()
        owner.release()
        rival.acquire()
    finally:
        owner.release()
        rival.release()
        first.close()
        second.close()


def test_read_your_writes_with_an_in_process_projector(ledger: Ledger, models: ReadModels) -> None:
    projector = Projector(models, poll_interval=5.0)
    projector.start()
    try:
        app_id = ledger.create_app("ryw").app_id
        outcome = ledger.create_user(app_id, external_id="EIDA", subscriptions=[ios("p")])
        projector.nudge()

        assert models.wait_for(outcome.position, timeout=10)
        found = models.profiles.user_by_alias(app_id, "external_id", "EIDA")
        assert found is not None
        assert found.id == outcome.user_id
        assert models.lag()["profiles"].events == 0
    finally:
        projector.stop()
    assert projector.error is None


def test_lag_counts_the_events_behind(ledger: Ledger, models: ReadModels) -> None:
    app_id = ledger.create_app("lag").app_id
    device_user(ledger, app_id, ios("p"))

    lag = models.lag()["ownership"]

    assert lag.events == ledger.recorder.max_notification_id()
    assert lag.seconds >= 0


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    steps=st.lists(step, min_size=5, max_size=30),
    page_size=st.sampled_from([1, 4, 1000]),  # pages split an aggregate's events
)
def test_read_models_match_the_fold_of_the_log(
    store_kind: str, steps: list[Step], page_size: int
) -> None:
    with fresh_store(store_kind) as env:
        ledger = Ledger(env, index_key=INDEX_KEY, clock=FakeClock())
        models = ReadModels(env, page_size=page_size)
        try:
            world = play(ledger, steps)
            caught_up(models)
            check_profiles(ledger, models, world.app_id, world.users)
            for subscription_id in set(world.subscriptions.values()):
                check_subscription(ledger, models, world.app_id, subscription_id, world.instants)
        finally:
            models.close()
            ledger.close()


def check_profiles(ledger: Ledger, models: ReadModels, app_id: UUID, users: set[UUID]) -> None:
    now = ledger.clock()
    for user_id in users:
        folded = ledger.user_as_of(user_id, now)
        assert folded is not None
        projected = models.profiles.user(app_id, user_id)
        if not folded.is_live:
            assert projected is None
            assert models.profiles.merged_into(user_id) == folded.merged_into
            continue
        assert projected is not None
        assert user_to_json(projected) == user_to_json(folded)
        if folded.external_id is not None:
            found = models.profiles.user_by_alias(app_id, "external_id", folded.external_id)
            assert found is not None
            assert found.id == user_id
        owned = {s.id for s in models.profiles.subscriptions_of(app_id, user_id)}
        assert owned == set(folded.subscriptions)


def check_subscription(
    ledger: Ledger,
    models: ReadModels,
    app_id: UUID,
    subscription_id: UUID,
    instants: list[datetime],
) -> None:
    assert models.ownership.timeline(app_id, subscription_id) == ledger.ownership_timeline(
        subscription_id
    )
    for instant in instants:
        assert models.ownership.owner_of(app_id, subscription_id, instant) == ledger.owner_of(
            subscription_id, instant
        )
    folded = ledger.read(app_id)
    try:
        expected: Subscription | None = folded.subscription(subscription_id)
    except SubscriptionNotFound:
        expected = None
    projected = models.profiles.subscription(app_id, subscription_id)
    if expected is None:
        assert projected is None
    else:
        assert projected is not None
        assert subscription_to_json(projected) == subscription_to_json(expected)


def test_a_write_on_another_connection_wakes_the_postgres_projector(
    postgres_env: dict[str, str],
) -> None:
    models = ReadModels(postgres_env, ["profiles"])
    projector = Projector(models, poll_interval=60.0)  # only a NOTIFY can wake it in time
    writer = Ledger(postgres_env, index_key=INDEX_KEY)
    projector.start()
    try:
        app_id = writer.create_app("notify").app_id
        outcome = writer.create_user(app_id, external_id="EIDA")

        assert models.wait_for(outcome.position, timeout=10)
        assert models.profiles.user(app_id, outcome.user_id) is not None
    finally:
        projector.stop()
        writer.close()
        models.close()


def test_the_librarys_projection_runner_drives_the_same_projection(
    postgres_env: dict[str, str],
) -> None:
    writer = Ledger(postgres_env, index_key=INDEX_KEY)
    app_id = writer.create_app("library runner").app_id
    user_id, push = device_user(writer, app_id, ios("p"))
    outcome = writer.login(app_id, push, "EIDA")
    runner = LibraryProjectionRunner(
        application_class=LedgerLog,
        projection_class=ProfilesProjection,
        view_class=PostgresProfilesView,
        env=postgres_env,
    )
    try:
        with runner:
            runner.wait(outcome.position, timeout=10)
            found = runner.view.user_by_alias(app_id, "external_id", "EIDA")
        assert found is not None
        assert user_to_json(found) == user_to_json(writer.read(app_id).user(user_id))
    finally:
        writer.close()
