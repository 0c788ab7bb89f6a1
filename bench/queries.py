"""MAU reads and point-in-time folds: their cost must not grow with history."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from bench.harness import INDEX_KEY, Row, fresh_store, ledger_for, median_time
from bench.synth import BatchWriter
from idledger.domain.ledger import Ledger
from idledger.domain.subscription import Subscription
from idledger.domain.user import User
from idledger.domain.values import OwnershipCause, SubscriptionSpec, SubscriptionType
from idledger.projections.service import Projector, ReadModels

START = datetime(2023, 1, 1, tzinfo=UTC)


def _app_with_history(ledger: Ledger, days: int, devices: int) -> UUID:
    app_id = ledger.create_app(f"{days} days").app_id
    writer = BatchWriter(ledger)
    for device in range(devices):
        user = User.create(app_id, START)
        spec = SubscriptionSpec(type=SubscriptionType.IOS_PUSH, token=f"{app_id}-{device}")
        push = Subscription.create(app_id, spec, user.id, OwnershipCause.DEVICE, START)
        user.attach(push.id, push.type, START)
        for day in range(0, days, 2):
            push.record_session(0, START + timedelta(days=day, hours=device % 24))
        writer.add(user, push)
    writer.flush()
    return app_id


def _read_times(
    models: ReadModels, label: str, app_id: UUID, day: date
) -> tuple[str, float, float]:
    one = median_time(lambda: models.mau.mau(app_id, day), 50)
    year = median_time(lambda: models.mau.mau_range(app_id, day - timedelta(days=364), day), 20)
    return label, one, year


def bench_mau(kind: str, devices: int) -> list[Row]:
    with fresh_store(kind) as (env, _):
        ledger = ledger_for(env)
        short = _app_with_history(ledger, 30, devices)
        year = _app_with_history(ledger, 365, devices)
        long = _app_with_history(ledger, 3 * 365, devices)
        ledger.close()
        models = ReadModels(env, ["mau"])
        projector = Projector(models)
        projector.run_once()
        projector.release()
        rows = [
            _read_times(models, label, app_id, (START + timedelta(days=last)).date())
            for label, app_id, last in (
                ("30 days", short, 29), ("1 year", year, 364), ("3 years", long, 3 * 365 - 1)
            )
        ]  # fmt: skip
        models.close()
    (_, one_short, year_short), (_, _, year_of_year), (_, one_long, year_long) = rows
    return [
        Row("mau", kind, "read one day, app with 3 years vs 30 days of sessions",
            f"{one_long * 1e3:.2f} ms", f"{one_short * 1e3:.2f} ms",
            f"{one_long / one_short:.2f}", "~1.0 (flat)"),
        Row("mau", kind, "read a 365-day range, 3 years vs 30 days of sessions",
            f"{year_long * 1e3:.2f} ms", f"{year_short * 1e3:.2f} ms",
            f"{year_long / year_short:.2f}", "~1.0 (flat)"),
        Row("mau", kind, "read a 365-day range, 3 years vs 1 year of sessions (365 days "
            "returned by both)", f"{year_long * 1e3:.2f} ms", f"{year_of_year * 1e3:.2f} ms",
            f"{year_long / year_of_year:.2f}", "~1.0 (flat)"),
    ]  # fmt: skip


class SteppingClock:
    """A minute per reading, so that a history spans distinct instants."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def _user_with_events(ledger: Ledger, app_id: UUID, events: int) -> tuple[UUID, UUID]:
    """A user and its push subscription with about ``events`` events each, written
    through the real commands (so snapshots are taken as in production)."""
    spec = SubscriptionSpec(type=SubscriptionType.IOS_PUSH, token=f"pit-{events}")
    user_id = ledger.create_user(app_id, subscriptions=[spec]).user_id
    (push_id,) = ledger.read(app_id).user(user_id).subscriptions
    for number in range(events):
        ledger.change_tags(app_id, user_id, {"n": str(number)})
        ledger.record_session(app_id, push_id)
    return user_id, push_id


def bench_point_in_time(kind: str, big: int) -> list[Row]:
    """Each read at instants spread over the whole history (early, middle, late):
    the median over instants of each instant's median time."""
    with fresh_store(kind) as (env, _):
        ledger = Ledger(env, index_key=INDEX_KEY, clock=SteppingClock())
        app_id = ledger.create_app("pit").app_id
        sizes = {10: _user_with_events(ledger, app_id, 10)}
        sizes[big] = _user_with_events(ledger, app_id, big)
        timings: dict[tuple[str, int], float] = {}
        for size, (user_id, push_id) in sizes.items():
            instants = _instants_across(ledger, user_id)
            timings[("user_as_of", size)] = _median_over(instants, ledger.user_as_of, user_id)
            timings[("owner_of", size)] = _median_over(instants, ledger.owner_of, push_id)
        ledger.close()
    return [
        Row("point-in-time", kind, f"{what}: aggregate with {big:,} events vs 10 "
            "(median over 19 instants across the history)",
            f"{timings[(what, big)] * 1e3:.2f} ms", f"{timings[(what, 10)] * 1e3:.2f} ms",
            f"{timings[(what, big)] / timings[(what, 10)]:.1f}", "close to 1 (snapshots)")
        for what in ("user_as_of", "owner_of")
    ]  # fmt: skip


def _instants_across(ledger: Ledger, user_id: UUID) -> list[datetime]:
    user = ledger.user_as_of(user_id, ledger.clock())
    assert user is not None
    span = user.modified_on - user.created_on
    return [user.created_on + span * k / 20 for k in range(1, 20)]


def _median_over(
    instants: list[datetime], read: Callable[[UUID, datetime], Any], key: UUID
) -> float:
    return statistics.median(median_time(partial(read, key, at), 5) for at in instants)
