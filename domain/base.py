"""Aggregate and event bases: pydantic events on the eventsourcing protocols.

The library accepts any event with ``originator_id``, ``originator_version`` and
``mutate()``, and any aggregate with ``id``, ``version`` and ``collect_events()``.
We use that seam instead of the library's dataclass metaclasses so that every
event is a validated pydantic model with a pinned topic and a schema version.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from eventsourcing.utils import register_topic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

_actor: ContextVar[str] = ContextVar("idledger_actor", default="system")


def current_actor() -> str:
    """Who causes the events being created now (an app key, an import, the system)."""
    return _actor.get()


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Record ``actor`` on every event created inside the block."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


class Value(BaseModel):
    """An immutable value object, validated on construction."""

    model_config = ConfigDict(frozen=True, extra="forbid")


TAggregate = TypeVar("TAggregate", bound="Aggregate")
_AGGREGATE_CLASSES: dict[type[Any], type[Aggregate] | None] = {}


class DomainEvent(Value, Generic[TAggregate]):
    """An immutable fact. ``TOPIC`` is what the store records: it never changes,
    whatever the class is called or wherever it lives. ``class_version`` is the
    schema version; a new version needs an ``upcast_vN_vN+1(state)`` static method.
    """

    TOPIC: ClassVar[str]
    class_version: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int = Field(ge=1)
    timestamp: AwareDatetime
    actor: str = Field(default_factory=current_actor, max_length=200)

    @classmethod
    def aggregate_class(cls) -> type[Aggregate] | None:
        """The aggregate this event belongs to: the X of ``DomainEvent[X]``."""
        if cls not in _AGGREGATE_CLASSES:  # read models ask for every event
            _AGGREGATE_CLASSES[cls] = cls._find_aggregate_class()
        return _AGGREGATE_CLASSES[cls]

    @classmethod
    def _find_aggregate_class(cls) -> type[Aggregate] | None:
        for klass in cls.__mro__:
            metadata = getattr(klass, "__pydantic_generic_metadata__", None)
            if metadata and metadata.get("args"):
                found = metadata["args"][0]
                return found if isinstance(found, type) else None
        return None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "TOPIC" in cls.__dict__:
            register_topic(cls.TOPIC, cls)

    def mutate(self, aggregate: TAggregate | None) -> TAggregate | None:
        if aggregate is None:
            raise EventOrderError(f"{type(self).__name__} needs an existing aggregate")
        if aggregate.id != self.originator_id:
            raise EventOrderError(f"event for {self.originator_id} applied to {aggregate.id}")
        if self.originator_version != aggregate.version + 1:
            raise EventOrderError(
                f"event version {self.originator_version} after {aggregate.version}"
            )
        self.apply(aggregate)
        aggregate._version = self.originator_version
        aggregate._modified_on = self.timestamp
        return aggregate

    def apply(self, aggregate: TAggregate) -> None:
        """Evolve the aggregate's state; every concrete event overrides this."""
        raise NotImplementedError


class CreationEvent(DomainEvent[TAggregate]):
    """The first event of an aggregate: it constructs the aggregate."""

    def mutate(self, aggregate: TAggregate | None) -> TAggregate | None:
        if aggregate is not None:
            raise EventOrderError(f"{type(self).__name__} applied to an existing aggregate")
        if self.originator_version != 1:
            raise EventOrderError("a creation event must be version 1")
        created = self.blank()
        created._id = self.originator_id
        created._version = 1
        created._created_on = self.timestamp
        created._modified_on = self.timestamp
        created._pending_events = []
        self.apply(created)
        return created

    def blank(self) -> TAggregate:
        """An empty instance of the aggregate class, filled in by ``apply``."""
        raise NotImplementedError


class Aggregate:
    """A consistency boundary: state folded from its own events."""

    _id: UUID
    _version: int
    _created_on: datetime
    _modified_on: datetime
    _pending_events: list[DomainEvent[Any]]

    @property
    def id(self) -> UUID:
        return self._id

    @property
    def version(self) -> int:
        return self._version

    @property
    def created_on(self) -> datetime:
        return self._created_on

    @property
    def modified_on(self) -> datetime:
        return self._modified_on

    @property
    def pending_events(self) -> list[DomainEvent[Any]]:
        return self._pending_events

    def collect_events(self) -> list[DomainEvent[Any]]:
        collected, self._pending_events = self._pending_events, []
        return collected

    def _next(self, at: datetime) -> dict[str, Any]:
        """Header fields of this aggregate's next event.

        Event times never go backwards within one aggregate: a clock that reads
        earlier than the last event (another worker's clock, a replayed import)
        is stamped with the last event's time, so timelines stay ordered.
        """
        return {
            "originator_id": self._id,
            "originator_version": self._version + 1,
            "timestamp": max(at, self._modified_on),
        }

    def _trigger(self, event: DomainEvent[Any]) -> None:
        event.mutate(self)
        self._pending_events.append(event)

    @classmethod
    def _start(cls: type[TAggregate], event: CreationEvent[TAggregate]) -> TAggregate:
        created = event.mutate(None)
        assert created is not None
        created._pending_events.append(event)
        return created

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id}, version={self._version})"


class EventOrderError(Exception):
    """An event was applied to the wrong aggregate or out of sequence."""
