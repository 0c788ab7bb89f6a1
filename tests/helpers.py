"""Small builders shared by the tests."""

from __future__ import annotations

from uuid import UUID

from idledger.domain.ledger import Ledger
from idledger.domain.values import SubscriptionSpec, SubscriptionType
from idledger.projections.service import Projector, ReadModels


def ios(token: str) -> SubscriptionSpec:
    return SubscriptionSpec(type=SubscriptionType.IOS_PUSH, token=token)


def web(token: str) -> SubscriptionSpec:
    return SubscriptionSpec(type=SubscriptionType.CHROME_PUSH, token=token)


def email(address: str) -> SubscriptionSpec:
    return SubscriptionSpec(type=SubscriptionType.EMAIL, token=address)


def sms(number: str) -> SubscriptionSpec:
    return SubscriptionSpec(type=SubscriptionType.SMS, token=number)


def device_user(ledger: Ledger, app_id: UUID, spec: SubscriptionSpec) -> tuple[UUID, UUID]:
    """A new anonymous user with one subscription, as an SDK's first start makes it."""
    user_id = ledger.create_user(app_id, subscriptions=[spec]).user_id
    (subscription_id,) = ledger.read(app_id).user(user_id).subscriptions
    return user_id, subscription_id


def caught_up(models: ReadModels) -> ReadModels:
    """Bring the read models up to date with the log, as one runner, then let go."""
    projector = Projector(models)
    try:
        projector.run_once()
    finally:
        projector.release()
    return models
