"""Rules that move subscriptions between users: the limit of 20 and eviction,
and the retirement of an anonymous user left with nothing.

As OneSignal documents it, a user is never refused a subscription for being full:
whatever adds one (an API create, login, transfer, device association) first
moves one out to a fresh anonymous user, recorded with cause ``evicted``."""

from __future__ import annotations

from collections import Counter

from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, alias_namespace, token_namespace
from idledger.domain.errors import Conflict
from idledger.domain.subscription import Subscription
from idledger.domain.unit_of_work import UnitOfWork
from idledger.domain.user import User
from idledger.domain.values import (
    MAX_SUBSCRIPTIONS_PER_USER,
    MIN_KEPT_EMAIL,
    MIN_KEPT_SMS,
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
)

_MIN_KEPT = {SubscriptionType.EMAIL: MIN_KEPT_EMAIL, SubscriptionType.SMS: MIN_KEPT_SMS}


def choose_eviction_victim(subscriptions: list[Subscription]) -> Subscription:
    """OneSignal's rule: the least recently active subscription (last session,
    else creation; ties by id), keeping at least 3 email and 3 SMS subscriptions.
    So the candidates are every push subscription and the email or SMS ones of a
    type the user holds more than its minimum of; a full user (20) always has one,
    as at most 3 + 3 of its subscriptions are protected."""
    counts = Counter(s.type for s in subscriptions)
    candidates = [s for s in subscriptions if s.type.is_push or counts[s.type] > _MIN_KEPT[s.type]]
    return min(candidates, key=lambda s: (s.recency, str(s.id)))


def make_room(uow: UnitOfWork, user: User) -> None:
    """Before a subscription is added to a full user, move the victim out to a
    fresh anonymous user. The user is saved with the rest of the command, so its
    limit holds under concurrent adds: a racing add re-runs on fresh state."""
    if len(user.subscriptions) < MAX_SUBSCRIPTIONS_PER_USER:
        return
    victim = choose_eviction_victim([uow.subscription(s) for s in user.subscriptions])
    refuge = User.create(uow.app_id, uow.at, cause=OwnershipCause.EVICTED)
    uow.add(refuge)
    move_subscription(uow, victim, refuge, OwnershipCause.EVICTED)


def move_subscription(
    uow: UnitOfWork,
    subscription: Subscription,
    target: User,
    cause: OwnershipCause,
) -> None:
    if subscription.owner_id == target.id:
        return
    make_room(uow, target)
    previous = uow.user(subscription.owner_id) if subscription.owner_id else None
    subscription.change_owner(target.id, cause, uow.at)
    target.attach(subscription.id, subscription.type, uow.at)
    if previous is not None:
        previous.detach(subscription.id, uow.at)
        if previous.holds_nothing:
            # OneSignal deletes a user with neither subscription nor alias; we
            # retire it and record where its subscription went, for audit.
            previous.merge_into(target.id, uow.at)


def add_subscription(
    uow: UnitOfWork,
    user: User,
    spec: SubscriptionSpec,
    cause: OwnershipCause,
) -> tuple[Subscription, str]:
    """Create the subscription on ``user``, or move the existing one with the
    same (type, token); a full user evicts one first. Returns it with "created",
    "moved" or "unchanged"."""
    if spec.token is not None:
        existing_id = uow.holder(token_namespace(spec.type), spec.token)
        if existing_id is not None:
            existing = uow.subscription(existing_id)
            if existing.owner_id == user.id:
                return existing, "unchanged"
            move_subscription(uow, existing, user, cause)
            return existing, "moved"
    make_room(uow, user)
    subscription = Subscription.create(uow.app_id, spec, user.id, cause, uow.at)
    uow.add(subscription)
    if spec.token is not None:
        taken_by = uow.claim(token_namespace(spec.type), spec.token, subscription.id)
        assert taken_by is None, "checked just above, within the same unit of work"
    user.attach(subscription.id, subscription.type, uow.at)
    return subscription, "created"


def change_token(uow: UnitOfWork, subscription: Subscription, token: str) -> None:
    if token == subscription.token:
        return
    namespace = token_namespace(subscription.type)
    if uow.claim(namespace, token, subscription.id) is not None:
        raise TokenTaken(subscription.type)
    if subscription.token is not None:
        uow.release(namespace, subscription.token)


def remove_user(uow: UnitOfWork, user: User) -> None:
    """Delete the user with its subscriptions and free its external_id and aliases."""
    for subscription_id in list(user.subscriptions):
        remove_subscription(uow, uow.subscription(subscription_id))
    if user.external_id is not None:
        uow.release(EXTERNAL_ID_NAMESPACE, user.external_id)
    for label, alias_id in user.aliases.items():
        uow.release(alias_namespace(label), alias_id)
    user.delete(uow.at)


def remove_subscription(uow: UnitOfWork, subscription: Subscription) -> None:
    if subscription.owner_id is not None:
        uow.user(subscription.owner_id).detach(subscription.id, uow.at)
    if subscription.token is not None:
        uow.release(token_namespace(subscription.type), subscription.token)
    subscription.delete(uow.at)


class TokenTaken(Conflict):
    code = "subscription-token-taken"

    def __init__(self, kind: SubscriptionType) -> None:
        super().__init__(f"another {kind} subscription of this app already has that token")
