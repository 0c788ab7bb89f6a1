"""Group commit on both stores: concurrent commands share one transaction, each
caller gets its own positions, and a conflicting member fails or re-runs alone.

Commands are held at a gate while deciding (the clock they read first), then let
go together, so the batches are known: the leader waits (up to a long window)
for every command still deciding."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import pytest
from eventsourcing.persistence import Recording

from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, claim_id, token_namespace
from idledger.domain.errors import AliasConflict
from idledger.domain.group_commit import GroupCommitSettings, Member
from idledger.domain.ledger import Ledger
from idledger.domain.unit_of_work import first_written, start_writing
from idledger.domain.values import SubscriptionSpec, SubscriptionType
from idledger.replay.csv_import import import_csv
from tests.conftest import INDEX_KEY

T = TypeVar("T")
WINDOW = GroupCommitSettings(window_ms=10_000, max_batch=64)  # waits for every decider


class GatedClock:
    """A clock whose next ``n`` readings wait for each other: ``n`` commands then
    decide together, and their commits meet in one batch."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()
        self._gate: threading.Barrier | None = None
        self._left = 0

    def gate(self, parties: int) -> None:
        self._gate, self._left = threading.Barrier(parties, timeout=60), parties

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(seconds=1)
            now, gate = self.now, self._gate if self._left > 0 else None
            self._left -= 1
        if gate is not None:
            gate.wait()
        return now


@pytest.fixture
def gated() -> GatedClock:
    return GatedClock()


@pytest.fixture
def ledger(store: dict[str, str], gated: GatedClock) -> Iterator[Ledger]:
    ledger = Ledger(store, index_key=INDEX_KEY, clock=gated, group_commit=WINDOW)
    yield ledger
    ledger.close()


def together(gated: GatedClock, calls: Sequence[Callable[[], T]]) -> list[T | BaseException]:
    """Run the calls in threads, gated to decide at once; their results or errors."""
    results: list[T | BaseException] = [RuntimeError("not run")] * len(calls)

    def run(number: int) -> None:
        try:
            results[number] = calls[number]()
        except BaseException as error:
            results[number] = error

    gated.gate(len(calls))
    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def push(token: str) -> SubscriptionSpec:
    return SubscriptionSpec(type=SubscriptionType.ANDROID_PUSH, token=token)


def test_concurrent_commands_share_one_transaction_and_each_gets_its_own_positions(
    ledger: Ledger, gated: GatedClock
) -> None:
    app_id = ledger.create_app("batch").app_id
    written: dict[str, tuple[int | None, int]] = {}

    def create(name: str) -> Callable[[], UUID]:
        def call() -> UUID:
            start_writing()
            outcome = ledger.create_user(app_id, external_id=name, subscriptions=[push(name)])
            assert outcome.position is not None
            written[name] = (first_written(), outcome.position)
            return outcome.user_id

        return call

    names = [f"person-{n}" for n in range(12)]
    batches_before = ledger.group_commit.batches
    users = together(gated, [create(name) for name in names])

    assert ledger.group_commit.batches == batches_before + 1  # 12 commands, 1 transaction
    view = ledger.read(app_id)
    for name, user_id in zip(names, users, strict=True):
        assert isinstance(user_id, UUID)
        user = view.user(user_id)
        assert user.external_id == name
        # The caller's own range of the log holds exactly its own events.
        first, last = written[name]
        assert first is not None
        ours = {user_id, *user.subscriptions, _claim(app_id, EXTERNAL_ID_NAMESPACE, name)}
        ours.add(_claim(app_id, token_namespace(SubscriptionType.ANDROID_PUSH), name))
        range_ = ledger.recorder.select_notifications(start=first, limit=last - first + 1)
        assert [n.id for n in range_] == list(range(first, last + 1))
        assert {UUID(str(n.originator_id)) for n in range_} == ours
    ranges = sorted(written.values(), key=lambda r: r[1])
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # type: ignore[operator]


def test_a_claim_race_inside_one_batch_has_exactly_one_winner(
    ledger: Ledger, gated: GatedClock
) -> None:
    app_id = ledger.create_app("race").app_id
    calls = [
        lambda n=n: ledger.create_user(
            app_id, external_id="shared" if n < 2 else f"solo-{n}", subscriptions=[push(f"t{n}")]
        )
        for n in range(8)
    ]
    results = together(gated, calls)

    shared = [r for r in results[:2] if not isinstance(r, BaseException)]
    assert len(shared) == 1  # one winner; the other lost the claim
    assert isinstance(next(r for r in results[:2] if r not in shared), AliasConflict)
    assert all(not isinstance(r, BaseException) for r in results[2:])  # batch-mates fine
    assert ledger.read(app_id).holder(EXTERNAL_ID_NAMESPACE, "shared") == shared[0].user_id
    assert ledger.races_lost >= 1


def test_adds_to_one_user_in_one_batch_all_land_within_the_limit_of_20(
    ledger: Ledger, gated: GatedClock
) -> None:
    """They all write the user's next version: the later ones re-run alone, and
    the 20-subscription rule is decided on fresh state each time."""
    app_id = ledger.create_app("one user").app_id
    user_id = ledger.create_user(app_id, external_id="owner").user_id
    for n in range(19):
        ledger.create_subscription(app_id, user_id, push(f"old-{n}"))
    calls = [
        lambda n=n: ledger.create_subscription(app_id, user_id, push(f"new-{n}")) for n in range(3)
    ]
    results = together(gated, calls)

    assert all(not isinstance(r, BaseException) for r in results), results
    view = ledger.read(app_id)
    held = view.user(user_id).subscriptions
    assert len(held) == 20
    assert {r.subscription_id for r in results} <= set(held)  # type: ignore[union-attr]
    evicted = [f"old-{n}" for n in range(19) if view.holder(_token, f"old-{n}") not in held]
    assert len(evicted) == 2
    assert ledger.races_lost >= 2


_token = token_namespace(SubscriptionType.ANDROID_PUSH)


class RivalledLedger(Ledger):
    """Before its first batch of several commands is written, a writer elsewhere
    changes one of the users in it: that batch meets an integrity error."""

    rival: Ledger
    target: tuple[UUID, UUID]
    rivalled = False

    def _write_together(self, members: Sequence[Member]) -> list[Recording[UUID]]:
        if len(members) > 1 and not self.rivalled:
            self.rivalled = True
            self.rival.change_tags(*self.target, {"rival": "first"})
        return super()._write_together(members)


def test_a_batch_meeting_an_integrity_error_is_written_member_by_member(
    store: dict[str, str], gated: GatedClock
) -> None:
    rival = Ledger(store, index_key=INDEX_KEY)
    ledger = RivalledLedger(store, index_key=INDEX_KEY, clock=gated, group_commit=WINDOW)
    try:
        app_id = rival.create_app("fallback").app_id
        target = rival.create_user(app_id, external_id="target").user_id
        ledger.rival, ledger.target = rival, (app_id, target)
        creates: list[Callable[[], Any]] = [
            lambda n=n: ledger.create_user(  # type: ignore[misc]
                app_id, external_id=f"new-{n}", subscriptions=[push(f"phone-{n}")]
            )
            for n in range(5)
        ]
        tag = [lambda: ledger.change_tags(app_id, target, {"mine": "1"})]
        results = together(gated, [*creates, *tag])

        assert all(not isinstance(r, BaseException) for r in results), results
        assert ledger.group_commit.fallbacks == 1
        assert ledger.races_lost == 1  # only the tag change re-ran
        # A fresh process reads everything, personal values included: the new
        # users' data keys were written although their first transaction rolled back.
        fresh = Ledger(store, index_key=INDEX_KEY)
        try:
            view = fresh.read(app_id)
            for n, outcome in enumerate(results[:5]):
                user = view.user(outcome.user_id)  # type: ignore[union-attr]
                assert user.external_id == f"new-{n}"
                (subscription_id,) = user.subscriptions
                assert view.subscription(subscription_id).token == f"phone-{n}"
            assert view.user(target).tags == {"rival": "first", "mine": "1"}
        finally:
            fresh.close()
    finally:
        ledger.close()
        rival.close()


def test_group_commit_off_commits_each_command_alone(
    store: dict[str, str], gated: GatedClock
) -> None:
    ledger = Ledger(
        store, index_key=INDEX_KEY, clock=gated, group_commit=GroupCommitSettings(max_batch=1)
    )
    try:
        app_id = ledger.create_app("alone").app_id
        results = together(
            gated,
            [lambda n=n: ledger.create_user(app_id, external_id=f"p{n}") for n in range(4)],  # type: ignore[misc]
        )
        assert all(not isinstance(r, BaseException) for r in results), results
        assert ledger.group_commit.batches == 0
        assert {ledger.read(app_id).holder(EXTERNAL_ID_NAMESPACE, f"p{n}") for n in range(4)} == {
            r.user_id  # type: ignore[union-attr]
            for r in results
        }
    finally:
        ledger.close()


def test_a_csv_import_writes_independent_rows_together_and_repeats_in_order(
    store: dict[str, str],
) -> None:
    """On PostgreSQL rows naming no identity in common are written at once (their
    commits grouped); a row repeating an earlier external_id still updates the
    user the earlier row made, and every event carries the import's actor."""
    ledger = Ledger(store, index_key=INDEX_KEY, group_commit=WINDOW)
    try:
        app_id = ledger.create_app("csv").app_id
        rows = ["external_id,email,tag:n\r\n"]
        rows += [f"p{n},p{n}@example.com,{n}\r\n" for n in range(40)]
        rows += ["p3,,again\r\n", "p39,,again\r\n"]
        report = import_csv(ledger, app_id, rows, "people.csv")

        assert (report.created, report.updated, report.rejected) == (40, 2, [])
        view = ledger.read(app_id)
        for n in range(40):
            user = view.user(view.holder(EXTERNAL_ID_NAMESPACE, f"p{n}"))  # type: ignore[arg-type]
            assert user.tags == {"n": "again" if n in (3, 39) else str(n)}
            assert len(user.subscriptions) == 1
        actors = {
            event.actor  # type: ignore[attr-defined]
            for notification in ledger.recorder.select_notifications(start=2, limit=1000)
            for event in [ledger.mapper.to_domain_event(notification)]
        }
        assert actors == {"import:csv:people.csv"}
        if "POSTGRES_SCHEMA" in store:  # written in waves: fewer transactions than rows
            assert ledger.group_commit.batches < 42
    finally:
        ledger.close()


def test_settings_come_from_the_environment_and_are_checked() -> None:
    settings = GroupCommitSettings.from_env(
        {"IDLEDGER_GROUP_COMMIT_WINDOW_MS": "2.5", "IDLEDGER_GROUP_COMMIT_MAX": "16"}
    )
    assert settings == GroupCommitSettings(window_ms=2.5, max_batch=16)
    assert not GroupCommitSettings.from_env({"IDLEDGER_GROUP_COMMIT_MAX": "1"}).enabled
    with pytest.raises(ValueError, match="IDLEDGER_GROUP_COMMIT_MAX"):
        GroupCommitSettings.from_env({"IDLEDGER_GROUP_COMMIT_MAX": "0"})
    with pytest.raises(ValueError, match="group commit settings"):
        GroupCommitSettings.from_env({"IDLEDGER_GROUP_COMMIT_WINDOW_MS": "soon"})


def _claim(app_id: UUID, namespace: str, value: str) -> UUID:
    return claim_id(INDEX_KEY, app_id, namespace, value)
