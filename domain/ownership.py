"""Rules that move subscriptions between users: the limit of 20, eviction,
and the retirement of an anonymous user left with nothing."""

from __future__ import annotations

from collections import Counter

from domain.claim import token_namespace
from domain.errors import Conflict, SubscriptionLimitReached
from domain.subscription import Subscription
from domain.unit_of_work import UnitOfWork
from domain.user import User
from domain.values import (
    MAX_SUBSCRIPTIONS_PER_USER,
    MIN_KEPT_EMAIL,
    MIN_KEPT_SMS,
    LimitPolicy,
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
)

_MIN_KEPT = {SubscriptionType.EMAIL: MIN_KEPT_EMAIL, SubscriptionType.SMS: MIN_KEPT_SMS}


def choose_eviction_victim(subscriptions: list[Subscription]) -> Subscription:
    """The least recently active push subscription; failing that, the least
    recently active email or SMS whose type keeps at least its minimum."""
    counts = Counter(s.type for s in subscriptions)
    push = [s for s in subscriptions if s.type.is_push]
    candidates = push or [s for s in subscriptions if counts[s.type] > _MIN_KEPT[s.type]]
    return min(candidates, key=lambda s: (s.recency, str(s.id)))


def make_room(uow: UnitOfWork, user: User, policy: LimitPolicy) -> None:
    if len(user.subscriptions) < MAX_SUBSCRIPTIONS_PER_USER:
        return
    if policy is LimitPolicy.REFUSE:
        raise SubscriptionLimitReached(user.id, MAX_SUBSCRIPTIONS_PER_USER)
    victim = choose_eviction_victim([uow.subscription(s) for s in user.subscriptions])
    refuge = User.create(uow.app_id, uow.at, cause=OwnershipCause.EVICTED)
    uow.add(refuge)
    move_subscription(uow, victim, refuge, OwnershipCause.EVICTED, LimitPolicy.REFUSE)


def move_subscription(
    uow: UnitOfWork,
    subscription: Subscription,
    target: User,
    cause: OwnershipCause,
    policy: LimitPolicy,
) -> None:
    if subscription.owner_id == target.id:
        return
    make_room(uow, target, policy)
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
    policy: LimitPolicy,
) -> tuple[Subscription, str]:
    """Create the subscription on ``user``, or move the existing one with the
    same (type, token). Returns it with "created", "moved" or "unchanged"."""
    if spec.token is not None:
        existing_id = uow.holder(token_namespace(spec.type), spec.token)
        if existing_id is not None:
            existing = uow.subscription(existing_id)
            if existing.owner_id == user.id:
                return existing, "unchanged"
            move_subscription(uow, existing, user, cause, policy)
            return existing, "moved"
    make_room(uow, user, policy)
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
