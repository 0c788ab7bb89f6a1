"""Rolling 30-day MAU against a brute-force count over all sessions."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idledger.domain.ledger import Ledger
from idledger.domain.values import SubscriptionSpec, SubscriptionType
from idledger.projections.mau import WINDOW_DAYS, newly_covered
from idledger.projections.service import ReadModels
from tests.conftest import INDEX_KEY, FakeClock, fresh_store
from tests.helpers import caught_up, email, ios, web

START = date(2025, 1, 1)
KINDS = [
    SubscriptionType.IOS_PUSH, SubscriptionType.ANDROID_PUSH, SubscriptionType.HUAWEI_PUSH,
    SubscriptionType.FIREOS_PUSH, SubscriptionType.CHROME_PUSH, SubscriptionType.EMAIL,
]  # fmt: skip


def brute_force(sessions: list[tuple[int, date]], kinds: dict[int, SubscriptionType], day: date):  # type: ignore[no-untyped-def]
    active: dict[str, set[int]] = defaultdict(set)
    for subscription, session_day in sessions:
        if kinds[subscription].is_mobile_push and 0 <= (day - session_day).days < WINDOW_DAYS:
            active[kinds[subscription].value].add(subscription)
    return {kind: len(subs) for kind, subs in active.items()}


def test_onesignal_billing_example_counts_mobile_push_only(
    ledger: Ledger, store: dict[str, str]
) -> None:
    app_id = ledger.create_app("billing").app_id
    specs = [ios("phone"), SubscriptionSpec(type=SubscriptionType.ANDROID_PUSH, token="tablet")]
    specs += [web("browser"), email("a@example.com")]
    user_id = ledger.create_user(app_id, external_id="EIDA", subscriptions=specs).user_id
    for subscription_id in ledger.read(app_id).user(user_id).subscriptions:
        ledger.record_session(app_id, subscription_id)
    models = ReadModels(store, ["mau"])
    try:
        caught_up(models)
        counts = models.mau.mau(app_id, ledger.clock().date())
    finally:
        models.close()

    assert counts == {"iOSPush": 1, "AndroidPush": 1}
    assert sum(counts.values()) == 2


def test_newly_covered_days_leave_out_what_neighbours_cover() -> None:
    assert newly_covered(100, None, None) == range(100, 130)
    assert newly_covered(100, 90, None) == range(120, 130)
    assert newly_covered(100, None, 110) == range(100, 110)
    assert newly_covered(100, 80, 105) == range(110, 105)  # empty: fully covered already


session = st.tuples(st.integers(0, len(KINDS) * 2 - 1), st.integers(0, 364), st.integers(0, 23))


@settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sessions=st.lists(session, min_size=1, max_size=50),
    page_size=st.sampled_from([1, 3, 7, 1000]),  # pages split a subscription's sessions
)
def test_mau_equals_a_brute_force_count_whatever_the_arrival_order(
    store_kind: str, sessions: list[tuple[int, int, int]], page_size: int
) -> None:
    with fresh_store(store_kind) as env:
        ledger = Ledger(env, index_key=INDEX_KEY, clock=FakeClock(datetime(2026, 6, 1, tzinfo=UTC)))
        models = ReadModels(env, ["mau"], page_size=page_size)
        try:
            app_id = ledger.create_app("mau").app_id
            other_app = ledger.create_app("noise").app_id
            ids, kinds = create_subscriptions(ledger, app_id)
            noise, _ = create_subscriptions(ledger, other_app)
            days: list[tuple[int, date]] = []
            for index, offset, hour in sessions:  # arrival order is hypothesis's: shuffled
                moment = datetime(2025, 1, 1, hour, tzinfo=UTC) + timedelta(days=offset)
                ledger.record_session(app_id, ids[index], active_at=moment)
                ledger.record_session(other_app, noise[index], active_at=moment)
                days.append((index, moment.date()))
            caught_up(models)

            last = START + timedelta(days=400)
            chart = models.mau.mau_range(app_id, START - timedelta(days=3), last)
            day = START - timedelta(days=3)
            while day <= last:
                assert chart.get(day, {}) == brute_force(days, kinds, day), day
                day += timedelta(days=1)
        finally:
            models.close()
            ledger.close()


def create_subscriptions(
    ledger: Ledger, app_id: UUID
) -> tuple[list[UUID], dict[int, SubscriptionType]]:
    ids: list[UUID] = []
    kinds: dict[int, SubscriptionType] = {}
    for index in range(len(KINDS) * 2):
        kind = KINDS[index % len(KINDS)]
        spec = SubscriptionSpec(type=kind, token=f"{app_id}-{index}")
        user_id = ledger.create_user(app_id, subscriptions=[spec]).user_id
        (subscription_id,) = ledger.read(app_id).user(user_id).subscriptions
        ids.append(subscription_id)
        kinds[index] = kind
    return ids, kinds
