"""Random command sequences never break the ledger's invariants (hypothesis)."""

from __future__ import annotations

import itertools
from datetime import datetime
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idledger.domain.claim import EXTERNAL_ID_NAMESPACE
from idledger.domain.history import fold_until
from idledger.domain.ledger import Ledger
from idledger.domain.subscription import Subscription
from idledger.domain.values import MAX_SUBSCRIPTIONS_PER_USER
from tests.commands import Step, World, play, step
from tests.conftest import INDEX_KEY, FakeClock, fresh_store


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
            world = play(ledger, steps)
            check_invariants(world)
        finally:
            ledger.close()
