"""Aggregate state <-> JSON, for read-model rows (validated both ways)."""

from __future__ import annotations

from typing import Any, TypeVar, get_type_hints
from uuid import UUID

from pydantic import AwareDatetime, create_model

from idledger.domain.base import Aggregate, Value
from idledger.domain.subscription import Subscription
from idledger.domain.user import User

A = TypeVar("A", bound=Aggregate)


class AggregateState(Value):
    id: UUID
    version: int
    created_on: AwareDatetime
    modified_on: AwareDatetime


def _state_model(aggregate_class: type[Aggregate]) -> type[AggregateState]:
    """A pydantic model of the aggregate's declared attributes, so it cannot drift."""
    fields: dict[str, Any] = {
        name: (hint, ...)
        for name, hint in get_type_hints(aggregate_class).items()
        if not name.startswith("_")
    }
    return create_model(f"{aggregate_class.__name__}State", __base__=AggregateState, **fields)


UserState = _state_model(User)
SubscriptionState = _state_model(Subscription)


def _dump(state_class: type[AggregateState], aggregate: Aggregate) -> str:
    fields: dict[str, Any] = {
        "id": aggregate.id,
        "version": aggregate.version,
        "created_on": aggregate.created_on,
        "modified_on": aggregate.modified_on,
    }
    for name in state_class.model_fields:
        if name not in fields:
            fields[name] = getattr(aggregate, name)
    return state_class.model_validate(fields).model_dump_json()


def _load(state_class: type[AggregateState], aggregate_class: type[A], text: str) -> A:
    state = state_class.model_validate_json(text)
    aggregate = aggregate_class.__new__(aggregate_class)
    aggregate._id = state.id
    aggregate._version = state.version
    aggregate._created_on = state.created_on
    aggregate._modified_on = state.modified_on
    aggregate._pending_events = []
    for name in state_class.model_fields:
        if name not in AggregateState.model_fields:
            value = getattr(state, name)
            setattr(aggregate, name, value.copy() if isinstance(value, dict | list) else value)
    return aggregate


def user_to_json(user: User) -> str:
    return _dump(UserState, user)


def user_from_json(text: str) -> User:
    return _load(UserState, User, text)


def subscription_to_json(subscription: Subscription) -> str:
    return _dump(SubscriptionState, subscription)


def subscription_from_json(text: str) -> Subscription:
    return _load(SubscriptionState, Subscription, text)
