"""Snapshots: an aggregate's state at one version, so that loading it (now or as
of an instant) folds at most an interval's worth of events.

Snapshots are derived data. They live in the library's separate snapshots table,
never in the event log or its notifications; any of them may be missing, and one
that no longer matches its aggregate's attributes is skipped, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, get_origin, get_type_hints
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import EventStore
from eventsourcing.utils import register_topic
from pydantic import AwareDatetime, Field, TypeAdapter

from idledger.domain.base import Aggregate, Value
from idledger.domain.sealing import WHOLE

SNAPSHOT_INTERVAL = 100  # events between two snapshots of one aggregate

logger = logging.getLogger(__name__)

_BY_AGGREGATE: dict[type[Aggregate], type[AggregateSnapshot]] = {}


class SnapshotMismatch(Exception):
    """The aggregate's attributes and its snapshot's state do not match."""


def fold(aggregate: Any, events: Iterable[Any]) -> Any:
    """The library's fold without its per-event runtime protocol check (slow on
    Python 3.11; every stored event here is one of our own classes)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class SnapshotWhenLong(Repository[UUID]):
    """Loads fold with ``fold`` unless told otherwise. Most aggregates never reach
    a snapshot; probing the snapshots table for each load doubled the reads of
    every command. Read up to ``threshold`` + 1 events first: an aggregate with no
    more than that is folded from them (one query); only a longer one goes the
    library's way, from its newest snapshot."""

    def __init__(self, *args: Any, threshold: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threshold = threshold

    def get(self, aggregate_id: UUID, **kwargs: Any) -> Any:
        kwargs.setdefault("projector_func", fold)
        return super().get(aggregate_id, **kwargs)

    def _reconstruct_aggregate(
        self, aggregate_id: UUID, version: int | None, projector_func: Any
    ) -> Any:
        if self.snapshot_store is None:  # snapshotting disabled: every event, as the library
            return super()._reconstruct_aggregate(aggregate_id, version, projector_func)
        records = self.event_store.recorder.select_events(
            aggregate_id, lte=version, limit=self.threshold + 1
        )
        if len(records) > self.threshold:
            return super()._reconstruct_aggregate(aggregate_id, version, projector_func)
        events = (self.event_store.mapper.to_domain_event(record) for record in records)
        aggregate = projector_func(None, events)
        if aggregate is None:
            raise AggregateNotFoundError(
                f"Aggregate {aggregate_id!r} version {version!r} not found."
            )
        return aggregate


class AggregateSnapshot(Value):
    """The state of an aggregate at ``originator_version``, as JSON values.

    Each aggregate class has its own subclass with a pinned ``TOPIC``. ``state``
    holds every public attribute, encoded with the attribute's own type hint, so
    that UUIDs, enums, datetimes, decimals and value objects come back exactly.
    ``schema_hash`` fingerprints those hints (and ``RULES``): after a change to
    them, older snapshots are skipped. Bump ``RULES`` when an event's ``apply`` changes
    meaning, since a snapshot holds the result of the old rules.
    """

    TOPIC: ClassVar[str]
    class_version: ClassVar[int] = 1  # the envelope's format, not the aggregate's
    # The whole state is sealed under the aggregate's data key: after an erasure
    # a snapshot cannot be read at all, and is skipped.
    PERSONAL: ClassVar[dict[str, Any]] = {WHOLE: None}
    aggregate_class: ClassVar[type[Aggregate]]
    RULES: ClassVar[int] = 1

    originator_id: UUID
    originator_version: int = Field(ge=1)
    timestamp: AwareDatetime  # the aggregate's modified_on
    created_on: AwareDatetime
    schema_hash: str
    state: dict[str, Any]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "TOPIC" in cls.__dict__:
            register_topic(cls.TOPIC, cls)
            _BY_AGGREGATE[cls.aggregate_class] = cls

    @classmethod
    def take(cls, aggregate: Aggregate) -> AggregateSnapshot:
        """The library's snapshot hook: dispatches on the aggregate's class."""
        try:
            snapshot_class = _BY_AGGREGATE[type(aggregate)]
        except KeyError:
            raise TypeError(f"no snapshot class for {type(aggregate).__name__}") from None
        return snapshot_class.of(aggregate)

    @classmethod
    def of(cls, aggregate: Aggregate) -> AggregateSnapshot:
        if type(aggregate) is not cls.aggregate_class:
            raise TypeError(f"{cls.__name__} cannot hold a {type(aggregate).__name__}")
        adapters = _adapters(cls.aggregate_class)
        attributes = {k: v for k, v in vars(aggregate).items() if not k.startswith("_")}
        if attributes.keys() != adapters.keys():
            raise SnapshotMismatch(
                f"{type(aggregate).__name__} attributes {sorted(attributes)} "
                f"are not its annotations {sorted(adapters)}"
            )
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=aggregate.modified_on,
            created_on=aggregate.created_on,
            schema_hash=cls.fingerprint(),
            state={k: adapters[k].dump_python(v, mode="json") for k, v in attributes.items()},
        )

    @classmethod
    def fingerprint(cls) -> str:
        return _fingerprint(cls.aggregate_class, cls.RULES)

    @property
    def is_current(self) -> bool:
        return self.schema_hash == self.fingerprint()

    def mutate(self, aggregate: Aggregate | None) -> Aggregate:
        """Rebuild the aggregate (the library folds a snapshot like a first event)."""
        if aggregate is not None:
            raise SnapshotMismatch("a snapshot starts a fold, it never continues one")
        adapters = _adapters(self.aggregate_class)
        if self.state.keys() != adapters.keys() or not self.is_current:
            raise SnapshotMismatch(f"snapshot of {self.originator_id} is out of date")
        restored = self.aggregate_class.__new__(self.aggregate_class)
        restored._id = self.originator_id
        restored._version = self.originator_version
        restored._created_on = self.created_on
        restored._modified_on = self.timestamp
        restored._pending_events = []
        for name, adapter in adapters.items():
            setattr(restored, name, adapter.validate_python(self.state[name]))
        return restored


class SnapshotStore(EventStore[UUID]):
    """The snapshots that still fit their aggregate; the others are skipped, so a
    reader folds from an older snapshot or from the first event instead."""

    def get(
        self,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[DomainEventProtocol[UUID]]:
        stored = self.recorder.select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        for record in stored:
            try:
                snapshot = self.mapper.to_domain_event(record)
            except Exception:  # an unknown topic, a payload that no longer validates
                logger.warning("skipping unreadable snapshot %s", record.topic, exc_info=True)
                continue
            if isinstance(snapshot, AggregateSnapshot) and snapshot.is_current:
                yield snapshot


_ADAPTERS: dict[type[Aggregate], dict[str, TypeAdapter[Any]]] = {}
_FINGERPRINTS: dict[tuple[type[Aggregate], int], str] = {}


def _adapters(aggregate_class: type[Aggregate]) -> dict[str, TypeAdapter[Any]]:
    """A validator per public attribute, from the aggregate's annotations."""
    if aggregate_class not in _ADAPTERS:
        _ADAPTERS[aggregate_class] = {
            name: TypeAdapter(hint)
            for name, hint in sorted(get_type_hints(aggregate_class).items())
            if not name.startswith("_") and get_origin(hint) is not ClassVar
        }
    return _ADAPTERS[aggregate_class]


def _fingerprint(aggregate_class: type[Aggregate], rules: int) -> str:
    # The JSON schema covers nested value objects too: a field added to
    # UserProperties changes the fingerprint as well.
    key = (aggregate_class, rules)
    if key not in _FINGERPRINTS:
        schemas = {
            name: adapter.json_schema(mode="serialization")
            for name, adapter in _adapters(aggregate_class).items()
        }
        described = json.dumps({"rules": rules, "attributes": schemas}, sort_keys=True)
        _FINGERPRINTS[key] = hashlib.sha256(described.encode()).hexdigest()[:16]
    return _FINGERPRINTS[key]
