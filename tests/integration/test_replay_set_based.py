"""Set-based rebuilds (projections/bulk.py): MAU and ownership computed by SQL
from the events table must equal, row for row, what the incremental projection
builds event by event, on both stores; a log the SQL does not assume (events out
of order, a time in another form, payloads the domain must decode) is rebuilt
event by event instead, with the same rows as ever."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idledger.domain.errors import LedgerError
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.domain.subscription import OwnerChanged, SessionRecorded, SubscriptionCreated
from idledger.domain.values import OwnershipCause, SubscriptionSpec, SubscriptionType
from idledger.projections import bulk
from idledger.projections.engine import Follower, catch_up_together
from idledger.projections.service import ReadModels
from idledger.replay.rebuild import REBUILD, discard, rebuild
from tests.conftest import INDEX_KEY, FakeClock, fresh_store
from tests.helpers import caught_up
from tests.integration.test_replay_fast_path import _busy_log

SET_BASED = sorted(bulk.SET_BASED)
NAMES = ["profiles", "ownership", "mau"]
KINDS = [SubscriptionType.IOS_PUSH, SubscriptionType.ANDROID_PUSH, SubscriptionType.EMAIL,
         SubscriptionType.CHROME_PUSH, SubscriptionType.HUAWEI_PUSH]  # fmt: skip


def _set_based(env: dict[str, str], names: list[str]) -> dict[str, Any]:
    """Each read model built by its SQL alone (raises ``NotSetBased`` if refused)."""
    log = LedgerLog(env)
    built = {}
    try:
        head = log.recorder.max_notification_id() or 0
        for name in names:
            discard(env, name, "_sql")
            follower = Follower(log, env, name, variant="_sql")
            try:
                bulk.BUILDERS[name](follower.view, log.recorder, log.name, head)
                built[name] = (follower.view.dump(), follower.view.position())
            finally:
                follower.close()
                discard(env, name, "_sql")
    finally:
        log.close()
    return built


def _event_by_event(env: dict[str, str], names: list[str], page_size: int = 1000) -> dict[str, Any]:
    log = LedgerLog(env)
    followers = [Follower(log, env, name, page_size=page_size, variant="_ev") for name in names]
    try:
        catch_up_together(followers)
        return {f.name: (f.view.dump(), f.view.position()) for f in followers}
    finally:
        for follower in followers:
            follower.close()
            discard(env, follower.name, "_ev")
        log.close()


def _rebuilt(env: dict[str, str], names: list[str]) -> dict[str, Any]:
    rebuild(env, names)
    log = LedgerLog(env)
    try:
        built = {}
        for name in names:
            follower = Follower(log, env, name, variant=REBUILD)
            try:
                built[name] = (follower.view.dump(), follower.view.position())
            finally:
                follower.close()
                discard(env, name, REBUILD)
        return built
    finally:
        log.close()


# (what, subscription index, day offset, user index)
action = st.tuples(
    st.sampled_from(["session", "session", "session", "transfer", "delete", "subscribe"]),
    st.integers(0, 7),
    st.integers(0, 400),
    st.integers(0, 3),
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    actions=st.lists(action, min_size=1, max_size=40),
    microsecond=st.sampled_from([0, 1, 123456, 999999]),
    page_size=st.sampled_from([1, 3, 1000]),  # pages split the incremental path's work
)
def test_set_based_sql_builds_the_rows_the_incremental_projection_builds(
    store_kind: str, actions: list[tuple[str, int, int, int]], microsecond: int, page_size: int
) -> None:
    start = datetime(2025, 1, 1, 8, 0, 0, microsecond, tzinfo=UTC)
    with fresh_store(store_kind) as env:
        ledger = Ledger(env, index_key=INDEX_KEY, clock=FakeClock(start))
        models = ReadModels(env, SET_BASED, page_size=page_size)
        try:
            apps = [ledger.create_app("sql").app_id, ledger.create_app("other").app_id]
            users = [  # an external_id keeps a user when its last subscription goes
                (apps[i % 2], ledger.create_user(apps[i % 2], external_id=f"u{i}").user_id)
                for i in range(4)
            ]
            subscriptions: list[tuple[Any, Any]] = []
            for number, (what, index, offset, user) in enumerate(actions):
                app_id, owner = users[user]
                if what == "subscribe" or not subscriptions:
                    kind = KINDS[number % len(KINDS)]
                    spec = SubscriptionSpec(type=kind, token=f"token-{number}")
                    made = ledger.create_subscription(app_id, owner, spec)
                    subscriptions.append((app_id, made.subscription_id))
                    continue
                app_id, subscription = subscriptions[index % len(subscriptions)]
                try:  # a deleted subscription, or a transfer to its own owner, is refused
                    if what == "session":
                        moment = start + timedelta(days=offset, hours=index)
                        ledger.record_session(app_id, subscription, 30, active_at=moment)
                    elif what == "transfer":
                        to = [u for a, u in users[user:] + users[:user] if a == app_id][-1]
                        ledger.transfer_subscription(
                            app_id, subscription, to, cause=OwnershipCause.TRANSFER
                        )
                    else:
                        ledger.delete_subscription(app_id, subscription)
                except LedgerError:
                    pass
            caught_up(models)
            live = {f.name: (f.view.dump(), f.view.position()) for f in models.followers.values()}
            assert _set_based(env, SET_BASED) == live
            assert _rebuilt(env, NAMES) == {**_event_by_event(env, NAMES), **live}
        finally:
            models.close()
            ledger.close()


def test_a_log_with_events_the_domain_must_decode_is_rebuilt_event_by_event(
    store: dict[str, str], ledger: Ledger, clock: FakeClock
) -> None:
    _busy_log(ledger, clock)  # upcasts, undecodable payloads, an unknown topic

    assert _rebuilt(store, NAMES) == _event_by_event(store, NAMES)
    # Without profiles, the log is still read to find them out.
    assert _rebuilt(store, SET_BASED) == _event_by_event(store, SET_BASED)


def _raw(ledger: Ledger, topic: str, aggregate: uuid.UUID, version: int, state: Any) -> None:
    stored = StoredEvent(aggregate, version, topic, json.dumps(state).encode())
    ledger.recorder.insert_events([stored])


def _stored_state(env: dict[str, str], topic: str) -> dict[str, Any]:
    """The payload of the log's first event of ``topic``, as stored."""
    log = LedgerLog(env)
    try:
        for notification in log.recorder.select_notifications(start=1, limit=10_000):
            if notification.topic == topic:
                state: dict[str, Any] = json.loads(notification.state)
                return state
    finally:
        log.close()
    raise AssertionError(f"no {topic} in the log")


@pytest.mark.parametrize(
    "oddity", ["session before creation", "no creation", "time with an offset", "impossible date"]
)
def test_a_log_the_sql_does_not_assume_is_refused_and_rebuilt_event_by_event(
    store: dict[str, str], ledger: Ledger, oddity: str
) -> None:
    app_id = ledger.create_app("odd").app_id
    user_id = ledger.create_user(app_id).user_id
    spec = SubscriptionSpec(type=SubscriptionType.IOS_PUSH, token="phone")
    subscription = ledger.create_subscription(app_id, user_id, spec).subscription_id
    ledger.record_session(app_id, subscription, 30)
    session = _stored_state(store, SessionRecorded.TOPIC)
    created = _stored_state(store, SubscriptionCreated.TOPIC)
    stranger = uuid.uuid4()
    if oddity == "session before creation":  # written straight to the log, out of order
        _raw(ledger, SessionRecorded.TOPIC, stranger, 2, session)
        _raw(ledger, SubscriptionCreated.TOPIC, stranger, 1, created)
    elif oddity == "no creation":
        moved = {"timestamp": session["timestamp"], "actor": "system",
                 "previous_owner_id": str(user_id), "owner_id": str(user_id),
                 "cause": "transfer", "schema_version": 1}  # fmt: skip
        _raw(ledger, OwnerChanged.TOPIC, stranger, 2, moved)
        _raw(ledger, SessionRecorded.TOPIC, stranger, 3, session)
    elif oddity == "time with an offset":  # Python reads it; the SQL does not assume it
        late = {**session, "active_at": "2026-01-05T10:00:00+02:00"}
        _raw(ledger, SessionRecorded.TOPIC, subscription, 3, late)
    else:
        _raw(ledger, SessionRecorded.TOPIC, subscription, 3,
             {**session, "active_at": "2026-02-30T10:00:00Z"})  # fmt: skip

    refusing = "ownership" if oddity == "no creation" else "mau"  # the one that reads it
    with pytest.raises(bulk.NotSetBased):
        _set_based(store, [refusing])
    assert _rebuilt(store, NAMES) == _event_by_event(store, NAMES, page_size=5000)
    assert _rebuilt(store, ["ownership", "mau"]) == _event_by_event(
        store, ["ownership", "mau"], page_size=5000
    )


def test_an_empty_log_rebuilds_to_empty_read_models(store: dict[str, str]) -> None:
    ledger = Ledger(store, index_key=INDEX_KEY)
    try:
        assert _rebuilt(store, NAMES) == _event_by_event(store, NAMES)
    finally:
        ledger.close()
