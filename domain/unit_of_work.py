"""One command's view of the store: loads each aggregate once, tracks claims,
and saves everything it touched in a single atomic ``save``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.persistence import Mapper, Recording

from idledger.domain.app import App
from idledger.domain.base import Aggregate
from idledger.domain.bulk_read import stored_events_of
from idledger.domain.claim import Claim, claim_id
from idledger.domain.errors import AppNotFound, NotFound, SubscriptionNotFound, UserNotFound
from idledger.domain.subscription import Subscription
from idledger.domain.user import User

T = TypeVar("T", bound=Aggregate)

# The first log position written in this context (one request, one thread): with
# the last position a command returns, it bounds what a request wrote, so that
# the answer can tell whether a read model set any of it aside.
_first_written: ContextVar[int | None] = ContextVar("idledger_first_written", default=None)


def _note_written(position: int) -> None:
    first = _first_written.get()
    _first_written.set(position if first is None else min(first, position))


def start_writing() -> None:
    """Forget positions noted before: a request (or any unit of work on the
    caller's side) starts here."""
    _first_written.set(None)


def first_written() -> int | None:
    """The first position written since the last call in this context; resets it."""
    first = _first_written.get()
    _first_written.set(None)
    return first


class Store(Protocol):
    """What a unit of work needs of the ledger: loads, and a commit."""

    @property
    def repository(self) -> Repository[UUID]: ...

    @property
    def recorder(self) -> Any: ...

    @property
    def mapper(self) -> Mapper[UUID]: ...

    def commit_changes(
        self, aggregates: Sequence[Aggregate], destroy_keys: Sequence[UUID]
    ) -> list[Recording[UUID]]: ...


class UnitOfWork:
    def __init__(self, store: Store, index_key: bytes, app_id: UUID, at: datetime) -> None:
        self._store = store
        self._index_key = index_key
        self.app_id = app_id
        self.at = at
        self._aggregates: dict[UUID, Aggregate | None] = {}
        self.position: int | None = None
        self.keys_to_destroy: list[UUID] = []  # erasure: in the events' transaction

    def app(self) -> App:
        return self._load(self.app_id, App, AppNotFound)

    def user(self, user_id: UUID) -> User:
        """A live user of this app; a retired one raises ``UserRetired``."""
        user = self._load(user_id, User, UserNotFound)
        if user.app_id != self.app_id:
            raise UserNotFound(user_id)  # never confirm another app's ids
        user.require_live()
        return user

    def any_user(self, user_id: UUID) -> User:
        """A user of this app whatever its state (deleted, retired): for erasure."""
        user = self._load(user_id, User, UserNotFound)
        if user.app_id != self.app_id:
            raise UserNotFound(user_id)
        return user

    def subscription(self, subscription_id: UUID) -> Subscription:
        subscription = self._load(subscription_id, Subscription, SubscriptionNotFound)
        if subscription.app_id != self.app_id:
            raise SubscriptionNotFound(subscription_id)
        subscription.require_live()
        return subscription

    def add(self, aggregate: Aggregate) -> None:
        self._aggregates[aggregate.id] = aggregate

    def holder(self, namespace: str, value: str) -> UUID | None:
        claim = self._claim(namespace, value)
        return claim.holder_id if claim else None

    def claim(self, namespace: str, value: str, holder_id: UUID) -> UUID | None:
        """Take the value for ``holder_id``; return the other holder if it is taken."""
        claim = self._claim(namespace, value)
        if claim is None:
            cid = claim_id(self._index_key, self.app_id, namespace, value)
            self.add(Claim.first(cid, holder_id, self.at))
        elif claim.holder_id is None:
            claim.take(holder_id, self.at)
        elif claim.holder_id != holder_id:
            return claim.holder_id
        return None

    def release(self, namespace: str, value: str) -> None:
        claim = self._claim(namespace, value)
        if claim is not None and claim.holder_id is not None:
            claim.release(self.at)

    def preload(self, claims: Iterable[tuple[str, str]]) -> None:
        """Read the app and the claims of these (namespace, value) pairs in one query,
        instead of one read each as the command reaches them."""
        wanted = {self.app_id} | {
            claim_id(self._index_key, self.app_id, namespace, value) for namespace, value in claims
        }
        wanted -= self._aggregates.keys()
        found = stored_events_of(self._store.recorder, sorted(wanted, key=str))
        for aggregate_id in wanted:
            aggregate: Any = None
            for stored in found.get(aggregate_id, []):
                event: Any = self._store.mapper.to_domain_event(stored)
                aggregate = event.mutate(aggregate)
            if aggregate is not None or aggregate_id != self.app_id:
                self._aggregates[aggregate_id] = aggregate  # None: no such claim yet

    def commit(self) -> int | None:
        """Save every touched aggregate atomically; return the log position."""
        changed = [a for a in self._aggregates.values() if a is not None and a.pending_events]
        if changed:
            recordings = self._store.commit_changes(changed, self.keys_to_destroy)
            self.position = recordings[-1].notification.id if recordings else None
            if recordings:
                _note_written(recordings[0].notification.id)
        return self.position

    def _claim(self, namespace: str, value: str) -> Claim | None:
        cid = claim_id(self._index_key, self.app_id, namespace, value)
        if cid not in self._aggregates:
            try:
                self._aggregates[cid] = self._store.repository.get(cid)
            except AggregateNotFoundError:
                self._aggregates[cid] = None
        claim = self._aggregates[cid]
        assert claim is None or isinstance(claim, Claim)
        return claim

    def _load(self, aggregate_id: UUID, kind: type[T], missing: Callable[[Any], NotFound]) -> T:
        aggregate = self._aggregates.get(aggregate_id)
        if aggregate is None:
            try:
                aggregate = self._store.repository.get(aggregate_id)
            except AggregateNotFoundError:
                raise missing(aggregate_id) from None
            self._aggregates[aggregate_id] = aggregate
        if not isinstance(aggregate, kind):
            raise missing(aggregate_id)
        return aggregate
