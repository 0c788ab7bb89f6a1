"""Stored-event mapping for pydantic events, after the library's documented
pydantic example: events are dumped to JSON-ready dicts and validated again on
the way back, after any upcasting from an older schema version."""

from __future__ import annotations

import json
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import ValidationError

from idledger.domain.base import DomainEvent
from idledger.domain.keystore import KeyRing
from idledger.domain.sealing import SEALED_KEY, WHOLE, SubjectErased, seal, unseal

SCHEMA_VERSION_KEY = "schema_version"


class JsonTranscoder(Transcoder):
    """Plain JSON: pydantic has already turned every value into a JSON type.
    orjson is several times faster than the standard library both ways (replay
    decodes every stored event); its output is the same compact UTF-8 JSON."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)  # NaN and the like, which only the standard library reads


def event_state(event: DomainEvent[Any]) -> dict[str, Any]:
    """The stored payload: every field but the originator's id and version, plus
    the class's schema version (always written, so old payloads are never ambiguous)."""
    state = event.model_dump(mode="json", exclude={"originator_id", "originator_version"})
    state[SCHEMA_VERSION_KEY] = type(event).class_version
    return state


def event_from_state(
    topic: str, originator_id: UUID | str, originator_version: int, state: dict[str, Any]
) -> DomainEvent[Any]:
    cls = cast("type[DomainEvent[Any]]", resolve_topic(topic))
    version = state.pop(SCHEMA_VERSION_KEY, 1)
    while version < cls.class_version:
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    state["originator_id"] = originator_id
    state["originator_version"] = originator_version
    try:
        return cls.model_validate(state)
    except ValidationError as error:
        raise MapperValidationError(
            f"stored event {topic} of {originator_id} v{originator_version} "
            f"does not match its schema: {error}"
        ) from error


class MapperValidationError(MapperDeserialisationError):
    """A stored payload no longer validates against its event class."""


def _bound(topic: str, originator_id: UUID | str, version: int) -> bytes:
    """What a sealed payload is bound to: it cannot be moved to another event."""
    return f"{topic}|{originator_id}|{version}".encode()


class PydanticMapper(Mapper[UUID]):
    """Events to stored events and back; personal values sealed per subject when
    the ledger has given the mapper its ``keyring`` (see ``domain.sealing``)."""

    keyring: KeyRing | None = None

    def to_stored_event(
        self, domain_event: DomainEventProtocol[UUID], *, existing: bool = False
    ) -> StoredEvent:
        """``existing``: the event is already in the store (being sealed in place),
        so its subject's key is made and stored now rather than with new events."""
        event = cast("DomainEvent[Any]", domain_event)
        state = event_state(event)
        topic = get_topic(type(event))
        if self.keyring is not None:
            self._seal(event, topic, state, existing)
        stored_state = self.transcoder.encode(state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(
            originator_id=event.originator_id,
            originator_version=event.originator_version,
            topic=topic,
            state=stored_state,
        )

    def _seal(
        self, event: DomainEvent[Any], topic: str, state: dict[str, Any], existing: bool
    ) -> None:
        assert self.keyring is not None
        kind = type(event)
        subject = event.originator_id
        if getattr(kind, "MAKES_SUBJECT_KEY", False) and not existing:
            key: bytes | None = self.keyring.new_key(subject)
        elif getattr(kind, "PERSONAL", None):
            key = self.keyring.key(subject, for_writing=True)
        else:
            return
        if key is None:
            raise SubjectErased(f"{subject} was erased: nothing more can be written about it")
        personal: dict[str, Any] = getattr(kind, "PERSONAL", {})
        seal(state, personal, key, subject, _bound(topic, subject, event.originator_version))

    def unseal(self, stored_event: StoredEvent, state: dict[str, Any]) -> None:
        """Put the personal values back, if the subject's key still exists."""
        if SEALED_KEY not in state:
            return
        originator = stored_event.originator_id
        subject = originator if isinstance(originator, UUID) else UUID(str(originator))
        key = self.keyring.key(subject) if self.keyring is not None else None
        bound = _bound(stored_event.topic, subject, stored_event.originator_version)
        if not unseal(state, key, bound) and WHOLE in getattr(
            resolve_topic(stored_event.topic), "PERSONAL", {}
        ):
            raise SubjectErased(f"{subject} was erased: its snapshot cannot be read")

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        stored_state = stored_event.state
        if self.cipher:
            stored_state = self.cipher.decrypt(stored_state)
        if self.compressor:
            stored_state = self.compressor.decompress(stored_state)
        state = self.transcoder.decode(stored_state)
        self.unseal(stored_event, state)
        return event_from_state(
            stored_event.topic, stored_event.originator_id, stored_event.originator_version, state
        )
