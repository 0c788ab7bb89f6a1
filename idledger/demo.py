"""OneSignal's documented login scenario ("OSID2 merges into OSID1"), scripted
against a real ledger, for `idledger demo`."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from idledger.domain.ledger import Ledger
from idledger.domain.values import SubscriptionSpec, SubscriptionType


@dataclass(frozen=True)
class DemoRun:
    app_id: UUID
    steps: list[str]
    web_subscription: UUID
    app_subscription: UUID
    users: list[UUID]


def _only_subscription(ledger: Ledger, app_id: UUID, user_id: UUID) -> UUID:
    (subscription_id,) = ledger.read(app_id).user(user_id).subscriptions
    return subscription_id


def run_login_scenario(ledger: Ledger) -> DemoRun:
    app_id = ledger.create_app("Demo app").app_id
    steps: list[str] = []

    osid1 = ledger.create_user(
        app_id, subscriptions=[SubscriptionSpec(type=SubscriptionType.CHROME_PUSH, token="web")]
    ).user_id
    web = _only_subscription(ledger, app_id, osid1)
    steps.append(f"website visit: anonymous OSID1 {osid1} with web push {web}")

    osid2 = ledger.create_user(
        app_id, subscriptions=[SubscriptionSpec(type=SubscriptionType.IOS_PUSH, token="ios")]
    ).user_id
    mobile = _only_subscription(ledger, app_id, osid2)
    steps.append(f"app install: anonymous OSID2 {osid2} with iOS push {mobile}")

    ledger.login(app_id, web, "EIDA")
    steps.append("website login EIDA: OSID1 identified in place")

    survivor = ledger.login(app_id, mobile, "EIDA").user_id
    steps.append(
        f"app login EIDA: iOS push moves to {survivor} (OSID1 wins); "
        f"OSID2 retired into {ledger.survivor_of(osid2)}"
    )

    osid3 = ledger.logout(app_id, mobile).user_id
    steps.append(f"app logout: iOS push moves to fresh anonymous OSID3 {osid3}")
    return DemoRun(app_id, steps, web, mobile, [osid1, osid2, osid3])
