"""Snapshots on the real stores: a read as of any instant equals the fold of every
event up to it, with snapshots, without them and after export and import; it
folds fewer events than an interval; snapshots never reach the event log, and a
snapshot that cannot be written or read changes no answer and fails no command."""

from __future__ import annotations

import json
import math
import sqlite3
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from idledger.domain.errors import SubscriptionNotFound, UserNotFound
from idledger.domain.history import events_of, fold_until, ownership_timeline
from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.domain.subscription import Subscription
from idledger.domain.user import User, UserSnapshot
from idledger.domain.values import OwnershipCause, Purchase, UserProperties
from idledger.replay.transfer import export_lines, import_events
from tests.aggregate_state import state
from tests.conftest import INDEX_KEY, POSTGRES_URL, FakeClock, fresh_store
from tests.helpers import device_user, ios

INTERVAL = 10
ROUNDS = 125


class SnapshottingLedger(Ledger):
    """The ledger with a small interval, so that a short history has many snapshots."""

    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        User: INTERVAL,
        Subscription: INTERVAL,
    }


@dataclass(frozen=True)
class Story:
    env: dict[str, str]
    ledger: Ledger
    alice: UUID
    bob: UUID
    drifter: UUID  # the anonymous user of a logout, retired at the next login
    push: UUID
    start: datetime
    end: datetime

    @property
    def users(self) -> list[UUID]:
        return [self.alice, self.bob, self.drifter]


def tell(ledger: Ledger, env: dict[str, str], rounds: int) -> Story:
    """Alice's phone changes hands (transfer to Bob, login back, a logout) among
    hundreds of tag, property, purchase, alias and session events; at the end
    Alice is deleted, and her phone with her."""
    app_id = ledger.create_app("snapshots").app_id
    start = ledger.clock()
    alice, push = device_user(ledger, app_id, ios("alice-phone"))
    ledger.login(app_id, push, "alice")
    bob = ledger.create_user(app_id, external_id="bob").user_id
    drifter = alice
    for i in range(rounds):
        ledger.change_tags(app_id, alice, {f"tag{i % 7}": str(i), f"tag{(i + 3) % 7}": ""})
        active_at = start + timedelta(minutes=i) if i % 2 else None
        ledger.record_session(app_id, push, session_time=i, active_at=active_at)
        if i % 5 == 0:
            properties = UserProperties(
                language="en", lat=48.85 + i / 1000, last_active=start + timedelta(hours=i)
            )
            ledger.change_properties(app_id, alice, properties)
        if i % 6 == 0:
            purchase = Purchase(sku=f"sku-{i}", amount=Decimal("1.50") + i, iso="EUR")
            ledger.record_purchase(app_id, alice, purchase)
        if i % 8 == 0:
            ledger.add_aliases(app_id, alice, {"crm": f"cust-{i}"})
        if i % 9 == 4:
            ledger.transfer_subscription(app_id, push, bob)
        elif i % 9 == 7:
            ledger.login(app_id, push, "alice")
        if i == rounds // 2:
            drifter = ledger.logout(app_id, push).user_id
    ledger.login(app_id, push, "alice")
    ledger.delete_user(app_id, alice)
    return Story(env, ledger, alice, bob, drifter, push, start, ledger.clock())


class FullFold:
    """The reference: every event folded in order, the state kept after each one."""

    def __init__(self, store: LedgerLog, aggregate_id: UUID) -> None:
        self.times: list[datetime] = []
        self.states: list[Any] = []
        self.owners: list[UUID | None] = []
        aggregate: Any = None
        for event in events_of(store, aggregate_id):
            aggregate = event.mutate(aggregate)
            self.times.append(event.timestamp)
            self.states.append(state(aggregate))
            self.owners.append(getattr(aggregate, "owner_id", None))

    def _index(self, at: datetime) -> int:
        return bisect_right(self.times, at) - 1

    def state_at(self, at: datetime) -> Any:
        index = self._index(at)
        return self.states[index] if index >= 0 else None

    def owner_at(self, at: datetime) -> UUID | None:
        index = self._index(at)
        return self.owners[index] if index >= 0 else None


def instants(story: Story, folds: dict[UUID, FullFold]) -> list[datetime]:
    """Event times (a sample, plus those around Alice's snapshots), the instants
    half a second either side of them, and before and after the whole story."""
    times = sorted({t for fold in folds.values() for t in fold.times})
    alice = folds[story.alice].times
    around_snapshots = [alice[v - 1] for v in range(INTERVAL - 1, len(alice), INTERVAL)]
    around_snapshots += [alice[v] for v in range(INTERVAL - 1, len(alice), INTERVAL)]
    chosen = sorted(set(times[::5] + times[:8] + times[-8:] + around_snapshots))
    half = timedelta(milliseconds=500)
    return [
        story.start - timedelta(days=365),
        *(moment + offset for moment in chosen for offset in (-half, timedelta(0), half)),
        story.end + timedelta(days=1),
    ]


def timeline_owner(store: LedgerLog, subscription_id: UUID, at: datetime) -> UUID | None:
    """The owner by the full ownership timeline (how ``owner_of`` used to answer)."""
    covering = [i for i in ownership_timeline(store, subscription_id) if i.covers(at)]
    return covering[0].owner_id if covering else None


def answers(ledger: Ledger, story: Story, at: datetime) -> Any:
    users = [state(ledger.user_as_of(user_id, at)) for user_id in story.users]
    return users, state(fold_until(ledger, story.push, at)), ledger.owner_of(story.push, at)


def expected(story: Story, folds: dict[UUID, FullFold], at: datetime) -> Any:
    users = [folds[user_id].state_at(at) for user_id in story.users]
    return users, folds[story.push].state_at(at), folds[story.push].owner_at(at)


def snapshot_versions(ledger: LedgerLog, aggregate_id: UUID) -> list[int]:
    assert ledger.snapshots is not None
    return [s.originator_version for s in ledger.snapshots.get(aggregate_id)]


def without_snapshots(env: dict[str, str]) -> Ledger:
    return Ledger(env | {"IS_SNAPSHOTTING_ENABLED": "n"}, index_key=INDEX_KEY, clock=FakeClock())


class DecodeCounter:
    """Counts events and snapshots read from the store (both go through the mapper)."""

    def __init__(self, ledger: LedgerLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = ledger.mapper.to_domain_event

        def counted(stored: StoredEvent) -> Any:
            self.count += 1
            return original(stored)

        monkeypatch.setattr(ledger.mapper, "to_domain_event", counted)

    def reads(self, call: Callable[[], object]) -> int:
        before = self.count
        call()
        return self.count - before


# One story per store kind, shared by the read-only tests of this module.
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def story(store_kind: str) -> Iterator[Story]:
    with fresh_store(store_kind) as env:
        ledger = SnapshottingLedger(env, index_key=INDEX_KEY, clock=FakeClock())
        try:
            yield tell(ledger, env, ROUNDS)
        finally:
            ledger.close()


@pytest.fixture(scope="module")
def folds(story: Story) -> dict[UUID, FullFold]:
    return {a: FullFold(story.ledger, a) for a in [*story.users, story.push]}


def test_reads_as_of_any_instant_equal_the_full_fold(
    story: Story, folds: dict[UUID, FullFold]
) -> None:
    ledger, alice, push = story.ledger, story.alice, story.push
    alice_version = len(folds[alice].times)
    assert alice_version > 20 * INTERVAL
    assert snapshot_versions(ledger, alice) == list(range(INTERVAL, alice_version + 1, INTERVAL))
    assert len(snapshot_versions(ledger, push)) >= 10
    causes = {i.cause for i in ownership_timeline(ledger, push)}
    assert {OwnershipCause.TRANSFER, OwnershipCause.LOGIN, OwnershipCause.LOGOUT} <= causes

    for at in instants(story, folds):
        for user_id in story.users:
            assert state(ledger.user_as_of(user_id, at)) == folds[user_id].state_at(at), at
        assert state(fold_until(ledger, push, at)) == folds[push].state_at(at), at
        owner = ledger.owner_of(push, at)
        assert owner == folds[push].owner_at(at) == timeline_owner(ledger, push, at), at

    after = ledger.user_as_of(alice, story.end)
    assert after is not None
    assert after.deleted
    assert ledger.owner_of(push, story.end) is None
    assert ledger.user_as_of(alice, story.start) is None


def test_ids_that_are_not_users_or_subscriptions_are_answered_as_before(story: Story) -> None:
    ledger, before = story.ledger, story.start - timedelta(days=1)

    assert ledger.user_as_of(uuid4(), story.end) is None
    assert ledger.user_as_of(story.push, before) is None
    with pytest.raises(UserNotFound):
        ledger.user_as_of(story.push, story.end)
    for subscription_id, at in [(uuid4(), story.end), (story.alice, story.end)]:
        with pytest.raises(SubscriptionNotFound):
            ledger.owner_of(subscription_id, at)
    with pytest.raises(SubscriptionNotFound):
        ledger.owner_of(story.alice, before)
    assert ledger.owner_of(story.push, before) is None


def test_a_read_folds_fewer_events_than_an_interval(
    story: Story, folds: dict[UUID, FullFold], monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = DecodeCounter(story.ledger, monkeypatch)
    longest = max(len(fold.times) for fold in folds.values())
    # Newest event, a binary search, one snapshot, then fewer than INTERVAL events.
    bound = 1 + math.ceil(math.log2(longest)) + 1 + (INTERVAL - 1) + 1

    for at in instants(story, folds):
        for user_id in story.users:
            assert counter.reads(partial(story.ledger.user_as_of, user_id, at)) <= bound
        assert counter.reads(partial(story.ledger.owner_of, story.push, at)) <= bound

    plain = without_snapshots(story.env)
    try:
        plain_counter = DecodeCounter(plain, monkeypatch)
        alice_version = len(folds[story.alice].times)
        assert plain_counter.reads(lambda: plain.user_as_of(story.alice, story.end)) > alice_version
    finally:
        plain.close()


def test_a_store_without_snapshots_gives_the_same_answers(
    story: Story, folds: dict[UUID, FullFold]
) -> None:
    plain = without_snapshots(story.env)
    try:
        assert plain.snapshots is None
        for at in instants(story, folds)[::3]:  # each read folds every event: fewer
            assert answers(plain, story, at) == expected(story, folds, at)
    finally:
        plain.close()


def test_snapshots_stay_out_of_the_log_and_an_imported_copy_answers_the_same(
    story: Story, folds: dict[UUID, FullFold], store_kind: str
) -> None:
    ledger = story.ledger
    lines = list(export_lines(ledger))[1:-1]  # the events, between header and trailer
    notifications = ledger.recorder.select_notifications(start=1, limit=100_000)
    assert len(lines) == len(notifications) == ledger.recorder.max_notification_id()
    events = sum(len(fold.times) for fold in folds.values())
    assert len([n for n in notifications if n.originator_id in folds]) == events
    snapshot_topics = {UserSnapshot.TOPIC, "idledger.subscription:Snapshot"}
    assert not {n.topic for n in notifications} & snapshot_topics
    assert not {json.loads(line)["topic"] for line in lines} & snapshot_topics

    with fresh_store(store_kind) as env:
        log = LedgerLog(env)
        try:
            import_events(log, list(export_lines(ledger)), index_key=INDEX_KEY, keys_from=ledger)
        finally:
            log.close()
        copy = SnapshottingLedger(env, index_key=INDEX_KEY, clock=FakeClock())
        try:
            assert snapshot_versions(copy, story.alice) == []
            for at in instants(story, folds)[::3]:  # each read folds every event: fewer
                assert answers(copy, story, at) == expected(story, folds, at)
        finally:
            copy.close()


# Tests that change their store, each on a fresh one.


@pytest.fixture
def small(store: dict[str, str], clock: FakeClock) -> Iterator[Ledger]:
    ledger = SnapshottingLedger(store, index_key=INDEX_KEY, clock=clock)
    yield ledger
    ledger.close()


def tagged_user(ledger: Ledger, changes: int) -> tuple[UUID, UUID, list[datetime]]:
    """An app and a user at version ``changes + 1``; the time after each command."""
    app_id = ledger.create_app("tags").app_id
    user_id = ledger.create_user(app_id).user_id
    times = [ledger.clock()]
    for i in range(changes):
        ledger.change_tags(app_id, user_id, {"n": str(i)})
        times.append(ledger.clock())
    return app_id, user_id, times


def user_answers(ledger: Ledger, user_id: UUID, times: list[datetime]) -> list[Any]:
    return [state(ledger.user_as_of(user_id, at)) for at in times]


def delete_snapshots(env: dict[str, str], ledger: LedgerLog) -> None:
    assert ledger.snapshots is not None
    table = ledger.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
    if "SQLITE_DBNAME" in env:
        with sqlite3.connect(env["SQLITE_DBNAME"]) as connection:
            connection.execute(f"DELETE FROM {table}")
        return
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'DELETE FROM "{env["POSTGRES_SCHEMA"]}"."{table}"')


def test_deleted_snapshots_change_no_answer_and_are_taken_again(
    small: Ledger, store: dict[str, str]
) -> None:
    app_id, user_id, times = tagged_user(small, 34)
    assert snapshot_versions(small, user_id) == [10, 20, 30]
    before = user_answers(small, user_id, times)

    delete_snapshots(store, small)

    assert snapshot_versions(small, user_id) == []
    assert user_answers(small, user_id, times) == before
    for i in range(6):  # commands load the user from its events alone
        small.change_tags(app_id, user_id, {"m": str(i)})
    assert snapshot_versions(small, user_id) == [40]
    user = small.read(app_id).user(user_id)
    assert (user.version, user.tags) == (41, {"n": "33", "m": "5"})


def test_unreadable_and_stale_snapshots_are_skipped(
    small: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id, user_id, times = tagged_user(small, 24)
    expected = [FullFold(small, user_id).state_at(at) for at in times]
    assert small.snapshots is not None
    garbage = StoredEvent(user_id, 25, UserSnapshot.TOPIC, b'{"schema_version":1}')
    small.snapshots.recorder.insert_events([garbage])

    assert snapshot_versions(small, user_id) == [10, 20]
    assert user_answers(small, user_id, times) == expected

    monkeypatch.setattr(UserSnapshot, "RULES", UserSnapshot.RULES + 1)  # as after a code change

    assert snapshot_versions(small, user_id) == []
    assert user_answers(small, user_id, times) == expected
    small.change_tags(app_id, user_id, {"n": "last"})
    assert small.read(app_id).user(user_id).tags == {"n": "last"}


def test_a_snapshot_that_cannot_be_written_fails_no_command(
    small: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert small.snapshots is not None

    def refuse(*_: object, **__: object) -> None:
        raise IntegrityError("snapshot refused")

    monkeypatch.setattr(small.snapshots, "put", refuse)
    app_id, user_id, times = tagged_user(small, 24)

    user = small.read(app_id).user(user_id)
    assert (user.version, user.tags) == (25, {"n": "23"})  # each command applied once
    assert small.races_lost == 0
    assert snapshot_versions(small, user_id) == []
    assert user_answers(small, user_id, times) == [
        FullFold(small, user_id).state_at(at) for at in times
    ]


def test_commands_load_aggregates_from_their_newest_snapshot(
    small: Ledger, store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id, user_id, _ = tagged_user(small, 44)
    counter = DecodeCounter(small, monkeypatch)

    # The user's snapshot at version 40, then its events 41 to 45.
    assert counter.reads(lambda: small.change_tags(app_id, user_id, {"n": "x"})) == 6

    plain = without_snapshots(store)
    try:
        plain_counter = DecodeCounter(plain, monkeypatch)
        assert plain_counter.reads(lambda: plain.change_tags(app_id, user_id, {"n": "y"})) == 46
    finally:
        plain.close()
    assert small.read(app_id).user(user_id).tags == {"n": "y"}


@pytest.mark.parametrize(
    "changes", [INTERVAL - 2, INTERVAL - 1, INTERVAL, INTERVAL + 1, 2 * INTERVAL + 3]
)
def test_short_aggregates_load_in_one_read_and_long_ones_from_a_snapshot(
    small: Ledger, monkeypatch: pytest.MonkeyPatch, changes: int
) -> None:
    _, user_id, _ = tagged_user(small, changes)
    version = changes + 1
    selects: list[int | None] = []
    original = small.recorder.select_events

    def counted(*args: Any, **kwargs: Any) -> Any:
        selects.append(kwargs.get("gt"))
        return original(*args, **kwargs)

    monkeypatch.setattr(small.recorder, "select_events", counted)
    loaded: User = small.repository.get(user_id)
    reads = list(selects)

    assert loaded.version == version
    assert state(loaded) == state(fold_until(small, user_id))
    if version <= INTERVAL:  # no snapshot can exist: the events alone, in one read
        assert reads == [None]
    else:  # a probe past the interval, then the events after the newest snapshot
        newest_snapshot = version // INTERVAL * INTERVAL
        assert reads == [None, newest_snapshot]
