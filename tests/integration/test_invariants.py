"""Random command sequences never break the ledger's invariants (hypothesis)."""

from __future__ import annotations

import itertools
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.claim import EXTERNAL_ID_NAMESPACE
from domain.errors import LedgerError
from domain.history import fold_until
from domain.ledger import Ledger
from domain.subscription import Subscription
from domain.values import MAX_SUBSCRIPTIONS_PER_USER, LimitPolicy, OwnershipCause
from tests.conftest import INDEX_KEY, FakeClock, fresh_store
from tests.helpers import email, ios, web

TOKENS = 6
EXTERNAL_IDS = ["alice", "bob", "carol"]


@dataclass(frozen=True)
class Step:
    kind: str
    token: int
    other: int = 0
    external_id: str = "alice"


KINDS = [
    "device", "login", "logout", "transfer", "email", "identify", "session", "delete_user",
    "delete_subscription",
]  # fmt: skip
tokens = st.integers(0, TOKENS - 1)
step = st.builds(Step, st.sampled_from(KINDS), tokens, tokens, st.sampled_from(EXTERNAL_IDS))


@dataclass
class World:
    ledger: Ledger
    app_id: UUID
    subscriptions: dict[int, UUID] = field(default_factory=dict)
    users: set[UUID] = field(default_factory=set)
    instants: list[datetime] = field(default_factory=list)

    def owner(self, token: int) -> UUID | None:
        subscription_id = self.subscriptions.get(token)
        if subscription_id is None:
            return None
        return self.ledger.owner_of(subscription_id, self.ledger.clock())

    def run(self, step: Step) -> None:
        kind, token = step.kind, step.token
        ledger, app_id, subscription_id = self.ledger, self.app_id, self.subscriptions.get(token)
        if kind == "device":
            outcome = ledger.create_user(
                app_id, subscriptions=[ios(f"ios-{token}") if token % 2 else web(f"w-{token}")],
                cause=OwnershipCause.DEVICE,
            )  # fmt: skip
            self.users.add(outcome.user_id)
            (self.subscriptions[token],) = ledger.read(app_id).user(outcome.user_id).subscriptions
        elif subscription_id is None:
            return
        elif kind == "login":
            self.users.add(ledger.login(app_id, subscription_id, step.external_id).user_id)
        elif kind == "logout":
            self.users.add(ledger.logout(app_id, subscription_id).user_id)
        elif (owner := self.owner(token)) is None:
            return
        elif kind == "transfer" and (target := self.owner(step.other)):
            ledger.transfer_subscription(app_id, subscription_id, target)
        elif kind == "email":
            ledger.create_subscription(
                app_id, owner, email(f"{step.other}@x.io"), policy=LimitPolicy.EVICT
            )
        elif kind == "identify":
            ledger.set_external_id(app_id, owner, step.external_id)
        elif kind == "session":
            ledger.record_session(app_id, subscription_id, session_time=30)
        elif kind == "delete_user":
            ledger.delete_user(app_id, owner)
        elif kind == "delete_subscription":
            ledger.delete_subscription(app_id, subscription_id)


def check_invariants(world: World) -> None:
    ledger, app_id = world.ledger, world.app_id
    view = ledger.read(app_id)
    now = ledger.clock()
    external_ids: dict[str, UUID] = {}
    for user_id in world.users:
        user = ledger.user_as_of(user_id, now)
        assert user is not None
        if not user.is_live:
            continue
        assert len(user.subscriptions) <= MAX_SUBSCRIPTIONS_PER_USER
        external_id = user.external_id
        if external_id is not None:
            assert external_id not in external_ids, "an external_id held by two users"
            external_ids[external_id] = user_id
            assert view.holder(EXTERNAL_ID_NAMESPACE, external_id) == user_id
        for subscription_id in user.subscriptions:
            assert ledger.owner_of(subscription_id, now) == user_id
    for subscription_id in set(world.subscriptions.values()):
        check_timeline(ledger, subscription_id, world.instants)


def check_timeline(ledger: Ledger, subscription_id: UUID, instants: list[datetime]) -> None:
    timeline = ledger.ownership_timeline(subscription_id)
    for earlier, later in itertools.pairwise(timeline):
        assert earlier.end == later.start, "one owner at every instant, no gaps or overlaps"
    for instant in instants:
        folded = fold_until(ledger, subscription_id, instant)
        expected = folded.owner_id if isinstance(folded, Subscription) else None
        owner_id = ledger.owner_of(subscription_id, instant)
        assert owner_id == expected
        if owner_id is not None:
            owner = ledger.user_as_of(owner_id, instant)
            assert owner is not None
            assert subscription_id in owner.subscriptions


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=5, max_size=40))
def test_random_commands_keep_the_invariants(store_kind: str, steps: list[Step]) -> None:
    with fresh_store(store_kind) as env:
        ledger = Ledger(env, index_key=INDEX_KEY, clock=FakeClock())
        try:
            world = World(ledger, ledger.create_app("property").app_id)
            for token in range(TOKENS):  # every token starts on a device of its own
                world.run(Step("device", token))
            for each in steps:
                with suppress(LedgerError):  # a refused command must keep the invariants too
                    world.run(each)
                world.instants.append(ledger.clock())
            check_invariants(world)
        finally:
            ledger.close()
