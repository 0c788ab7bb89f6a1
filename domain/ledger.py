"""The Ledger: one method per command; each is load, decide, save once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from idledger.domain import history
from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, alias_namespace, token_namespace
from idledger.domain.erasure import Erasure, erase_user
from idledger.domain.errors import AliasConflict, InvalidValue
from idledger.domain.ownership import (
    add_subscription,
    change_token,
    move_subscription,
    remove_subscription,
    remove_user,
)
from idledger.domain.service import LedgerBase, SubscriptionOutcome, UserOutcome
from idledger.domain.subscription import Subscription
from idledger.domain.unit_of_work import UnitOfWork
from idledger.domain.user import User
from idledger.domain.values import (
    MAX_SUBSCRIPTIONS_PER_USER,
    OwnershipCause,
    Purchase,
    SubscriptionSpec,
    SubscriptionUpdate,
    UserProperties,
    check_alias,
    check_external_id,
)

_UserChange = Callable[[UnitOfWork, User], None]


@dataclass(frozen=True)
class ProfileChange:
    """What an API call may change on a user at once."""

    external_id: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    properties: UserProperties = field(default_factory=UserProperties)
    purchases: Sequence[Purchase] = ()
    subscriptions: Sequence[SubscriptionSpec] = ()
    sessions: int = 0  # OneSignal's session_count delta
    session_time: int = 0  # seconds, OneSignal's session_time delta

    def check(self) -> None:
        """Refuse bad values before anything is loaded or written. One body may
        name at most 20 subscriptions (a 400); adding them to a user who already
        has some evicts the oldest beyond 20 instead (``ownership.make_room``)."""
        if len(self.subscriptions) > MAX_SUBSCRIPTIONS_PER_USER:
            raise InvalidValue("subscriptions", f"at most {MAX_SUBSCRIPTIONS_PER_USER}")
        if self.external_id is not None:
            check_external_id(self.external_id)
        for label, alias_id in self.aliases.items():
            check_alias(label, alias_id)

    def claims(self) -> list[tuple[str, str]]:
        """The (namespace, value) of every unique value this change names."""
        named = [(alias_namespace(label), alias_id) for label, alias_id in self.aliases.items()]
        if self.external_id is not None:
            named.append((EXTERNAL_ID_NAMESPACE, self.external_id))
        named += [(token_namespace(s.type), s.token) for s in self.subscriptions if s.token]
        return named

    def apply(
        self, uow: UnitOfWork, user: User, cause: OwnershipCause = OwnershipCause.API
    ) -> None:
        uow.preload(self.claims())  # one read for them all, not one each
        _identify(uow, user, self.external_id, self.aliases)
        user.change_tags(dict(self.tags), uow.at)
        user.change_properties(self.properties, uow.at)
        for purchase in self.purchases:
            user.record_purchase(purchase, uow.at)
        for spec in self.subscriptions:
            add_subscription(uow, user, spec, cause)  # a full user evicts, as in OneSignal
        if self.sessions or self.session_time:
            _record_user_sessions(uow, user, max(self.sessions, 1), self.session_time)


_SubscriptionChange = Callable[[UnitOfWork], Subscription]


class Ledger(LedgerBase):
    # Users -------------------------------------------------------------------

    def create_user(
        self,
        app_id: UUID,
        *,
        external_id: str | None = None,
        aliases: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        properties: UserProperties | None = None,
        subscriptions: Sequence[SubscriptionSpec] = (),
        purchases: Sequence[Purchase] = (),
        cause: OwnershipCause = OwnershipCause.API,
    ) -> UserOutcome:
        """A new user; an external_id or alias held by another user is an ``AliasConflict``."""
        change = ProfileChange(
            external_id=external_id,
            aliases=dict(aliases or {}),
            tags=dict(tags or {}),
            properties=properties or UserProperties(),
            purchases=tuple(purchases),
            subscriptions=tuple(subscriptions),
        )
        change.check()

        def create(uow: UnitOfWork) -> UUID:
            uow.preload(change.claims())  # the app with them
            uow.app()
            user = User.create(app_id, uow.at, cause=cause)
            uow.add(user)
            change.apply(uow, user, cause)
            return user.id

        user_id, position = self._run(app_id, create)
        return UserOutcome(position, user_id, created=True)

    def update_user(self, app_id: UUID, user_id: UUID, change: ProfileChange) -> UserOutcome:
        """Several changes to one user (identity, tags, properties, purchases,
        subscriptions), all saved or none."""
        change.check()
        return self._on_user(app_id, user_id, lambda uow, u: change.apply(uow, u))

    def set_external_id(self, app_id: UUID, user_id: UUID, external_id: str) -> UserOutcome:
        check_external_id(external_id)
        return self._on_user(app_id, user_id, lambda uow, u: _identify(uow, u, external_id, {}))

    def remove_external_id(self, app_id: UUID, user_id: UUID) -> UserOutcome:
        def remove(uow: UnitOfWork, user: User) -> None:
            if user.external_id is not None:
                uow.release(EXTERNAL_ID_NAMESPACE, user.external_id)
            user.remove_external_id(uow.at)

        return self._on_user(app_id, user_id, remove)

    def add_aliases(self, app_id: UUID, user_id: UUID, aliases: Mapping[str, str]) -> UserOutcome:
        for label, alias_id in aliases.items():
            check_alias(label, alias_id)
        return self._on_user(app_id, user_id, lambda uow, u: _identify(uow, u, None, aliases))

    def remove_alias(self, app_id: UUID, user_id: UUID, label: str) -> UserOutcome:
        def remove(uow: UnitOfWork, user: User) -> None:
            if label in user.aliases:
                uow.release(alias_namespace(label), user.aliases[label])
            user.remove_alias(label, uow.at)

        return self._on_user(app_id, user_id, remove)

    def change_tags(self, app_id: UUID, user_id: UUID, tags: Mapping[str, str]) -> UserOutcome:
        return self._on_user(app_id, user_id, lambda uow, u: u.change_tags(dict(tags), uow.at))

    def change_properties(
        self, app_id: UUID, user_id: UUID, properties: UserProperties
    ) -> UserOutcome:
        return self._on_user(
            app_id, user_id, lambda uow, u: u.change_properties(properties, uow.at)
        )

    def record_purchase(self, app_id: UUID, user_id: UUID, purchase: Purchase) -> UserOutcome:
        return self._on_user(app_id, user_id, lambda uow, u: u.record_purchase(purchase, uow.at))

    def delete_user(self, app_id: UUID, user_id: UUID) -> UserOutcome:
        """Deletes the user with its subscriptions and frees its external_id and aliases."""

        return self._on_user(app_id, user_id, remove_user)

    def erase_user(self, app_id: UUID, user_id: UUID) -> Erasure:
        """Delete the user and destroy its data keys (see ``domain.erasure``)."""
        return erase_user(self, app_id, user_id)

    # Login and logout, as OneSignal's SDKs perform them ----------------------

    def login(self, app_id: UUID, subscription_id: UUID, external_id: str) -> UserOutcome:
        """Identify the subscription's user, or move the subscription to the user
        who already holds ``external_id`` (whose onesignal_id wins)."""
        check_external_id(external_id)

        def login(uow: UnitOfWork) -> UUID:
            subscription = uow.subscription(subscription_id)
            assert subscription.owner_id is not None
            current = uow.user(subscription.owner_id)
            holder_id = uow.holder(EXTERNAL_ID_NAMESPACE, external_id)
            if holder_id == current.id:
                return current.id
            if holder_id is None and current.is_anonymous:
                _identify(uow, current, external_id, {})
                return current.id
            if holder_id is None:
                target = User.create(app_id, uow.at, cause=OwnershipCause.LOGIN)
                uow.add(target)
                _identify(uow, target, external_id, {})
            else:
                target = uow.user(holder_id)
            move_subscription(uow, subscription, target, OwnershipCause.LOGIN)
            return target.id

        user_id, position = self._run(app_id, login)
        return UserOutcome(position, user_id)

    def logout(self, app_id: UUID, subscription_id: UUID) -> UserOutcome:
        """Move the subscription to a fresh anonymous user (a no-op if already anonymous)."""

        def logout(uow: UnitOfWork) -> tuple[UUID, bool]:
            subscription = uow.subscription(subscription_id)
            assert subscription.owner_id is not None
            current = uow.user(subscription.owner_id)
            if current.is_anonymous:
                return current.id, False
            fresh = User.create(app_id, uow.at, cause=OwnershipCause.LOGOUT)
            uow.add(fresh)
            move_subscription(uow, subscription, fresh, OwnershipCause.LOGOUT)
            return fresh.id, True

        (user_id, created), position = self._run(app_id, logout)
        return UserOutcome(position, user_id, created=created)

    # Subscriptions -----------------------------------------------------------

    def create_subscription(
        self,
        app_id: UUID,
        user_id: UUID,
        spec: SubscriptionSpec,
        *,
        cause: OwnershipCause = OwnershipCause.API,
    ) -> SubscriptionOutcome:
        """Add a subscription; a 21st never fails: the least recently active one
        moves out to a fresh anonymous user (``choose_eviction_victim``), as
        OneSignal does."""

        def create(uow: UnitOfWork) -> tuple[Subscription, str]:
            return add_subscription(uow, uow.user(user_id), spec, cause)

        (subscription, status), position = self._run(app_id, create)
        return SubscriptionOutcome(position, subscription.id, user_id, status)

    def update_subscription(
        self, app_id: UUID, subscription_id: UUID, change: SubscriptionUpdate
    ) -> SubscriptionOutcome:
        def update(uow: UnitOfWork) -> Subscription:
            subscription = uow.subscription(subscription_id)
            if change.token is not None:
                change_token(uow, subscription, change.token)
            subscription.update(change, uow.at)
            return subscription

        return self._on_subscription(app_id, update, "unchanged")

    def delete_subscription(self, app_id: UUID, subscription_id: UUID) -> SubscriptionOutcome:
        def delete(uow: UnitOfWork) -> UUID | None:
            subscription = uow.subscription(subscription_id)
            owner_id = subscription.owner_id
            remove_subscription(uow, subscription)
            return owner_id

        owner_id, position = self._run(app_id, delete)
        assert owner_id is not None
        return SubscriptionOutcome(position, subscription_id, owner_id, "deleted")

    def transfer_subscription(
        self,
        app_id: UUID,
        subscription_id: UUID,
        to_user_id: UUID,
        *,
        cause: OwnershipCause = OwnershipCause.TRANSFER,
    ) -> SubscriptionOutcome:
        """Move a subscription to another user of the same app; a full target
        evicts its least recently active subscription."""

        def transfer(uow: UnitOfWork) -> Subscription:
            subscription = uow.subscription(subscription_id)
            move_subscription(uow, subscription, uow.user(to_user_id), cause)
            return subscription

        return self._on_subscription(app_id, transfer, "moved")

    def record_session(
        self,
        app_id: UUID,
        subscription_id: UUID,
        session_time: int = 0,
        active_at: datetime | None = None,
    ) -> SubscriptionOutcome:
        """An activity ping; ``active_at`` lets a late ping or an import say when."""

        def record(uow: UnitOfWork) -> Subscription:
            subscription = uow.subscription(subscription_id)
            subscription.record_session(session_time, uow.at, active_at)
            return subscription

        return self._on_subscription(app_id, record, "unchanged")

    # Point in time, folded from the log --------------------------------------

    def user_as_of(self, user_id: UUID, at: datetime) -> User | None:
        return history.user_as_of(self, user_id, at)

    def owner_of(self, subscription_id: UUID, at: datetime) -> UUID | None:
        return history.owner_of(self, subscription_id, at)

    def ownership_timeline(self, subscription_id: UUID) -> list[history.OwnershipInterval]:
        return history.ownership_timeline(self, subscription_id)

    def survivor_of(self, user_id: UUID) -> UUID:
        return history.survivor_of(self, user_id)

    # Helpers -----------------------------------------------------------------

    def _on_user(self, app_id: UUID, user_id: UUID, change: _UserChange) -> UserOutcome:
        def apply(uow: UnitOfWork) -> None:
            change(uow, uow.user(user_id))

        _, position = self._run(app_id, apply)
        return UserOutcome(position, user_id)

    def _on_subscription(
        self, app_id: UUID, change: _SubscriptionChange, status: str
    ) -> SubscriptionOutcome:
        subscription, position = self._run(app_id, change)
        assert subscription.owner_id is not None
        return SubscriptionOutcome(position, subscription.id, subscription.owner_id, status)


def _identify(
    uow: UnitOfWork, user: User, external_id: str | None, aliases: Mapping[str, str]
) -> None:
    """Claim and set an external_id and aliases; all or nothing."""
    wanted = {
        label: (alias_namespace(label), alias_id)
        for label, alias_id in aliases.items()
        if user.aliases.get(label) != alias_id
    }
    if external_id is not None and external_id != user.external_id:
        wanted["external_id"] = (EXTERNAL_ID_NAMESPACE, external_id)  # never an alias label
    conflicting = {
        label: value
        for label, (namespace, value) in wanted.items()
        if uow.claim(namespace, value, user.id) is not None
    }
    if conflicting:
        raise AliasConflict(conflicting)
    for label, (namespace, value) in wanted.items():
        previous = user.external_id if label == "external_id" else user.aliases.get(label)
        if previous is not None:
            uow.release(namespace, previous)
        if label == "external_id":
            user.set_external_id(value, uow.at)
        else:
            user.add_alias(label, value, uow.at)


def _record_user_sessions(uow: UnitOfWork, user: User, count: int, session_time: int) -> None:
    """OneSignal counts sessions per user; we record them on the user's current
    device: its most recently active push subscription."""
    pushes = [uow.subscription(s) for s, kind in user.subscriptions.items() if kind.is_push]
    if not pushes:
        raise InvalidValue("deltas", "the user has no push subscription to record sessions on")
    current = max(pushes, key=lambda s: (s.recency, str(s.id)))
    for number in range(count):
        current.record_session(session_time if number == 0 else 0, uow.at)
