"""The log as read models read it: rows selected straight from the events table,
ids kept as text, payloads parsed once with orjson and trusted.

Every payload in the log was validated by pydantic when it was written (commands,
imports from files), so a read model need not validate it again: it only needs
the fields it reads. A payload that is not exactly what this release writes (an
older schema version, fields missing or extra, an unknown topic, not JSON) goes
through the domain's own decoding (``mapper.to_domain_event``, upcasters and
validation), which either returns the event, turned into the same plain payload,
or says why it does not decode (the read models then dead-letter it).

Personal values stay sealed here: ``Recorded.opened`` unseals one event's values
for the read models that show them (profiles); the others never pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias
from uuid import UUID

import orjson
from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import resolve_topic, retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from idledger.domain.base import DomainEvent
from idledger.domain.keystore import KeyRing
from idledger.domain.mapper import SCHEMA_VERSION_KEY, event_state
from idledger.domain.sealing import SEALED_KEY, unseal
from idledger.projections.dead_letters import Undecodable, describe

if TYPE_CHECKING:
    from idledger.domain.service import LedgerLog

# (position, originator id, originator version, topic, stored state) as selected
RawRow: TypeAlias = tuple[int, str, int, str, bytes]
HEADER = frozenset({"originator_id", "originator_version"})


class Recorded:
    """One stored event: its header, and its payload as the write path stored it
    (``schema_version`` left out; personal values sealed until ``opened``)."""

    __slots__ = ("_keyring", "originator_id", "originator_version", "state", "topic")

    def __init__(
        self,
        originator_id: str,
        originator_version: int,
        topic: str,
        state: dict[str, Any],
        keyring: KeyRing | None = None,
    ) -> None:
        self.originator_id = originator_id
        self.originator_version = originator_version
        self.topic = topic
        self.state = state
        self._keyring = keyring

    @classmethod
    def of(cls, event: DomainEvent[Any]) -> Recorded:
        """A decoded domain event (the library's runners and dead-letter retries
        hand those over), as the same plain payload."""
        state = event_state(event)
        del state[SCHEMA_VERSION_KEY]
        return cls(str(event.originator_id), event.originator_version, event.TOPIC, state)

    @property
    def timestamp(self) -> datetime:
        return datetime.fromisoformat(self.state["timestamp"])

    def opened(self) -> dict[str, Any]:
        """The payload with its personal values put back (placeholders stay once the
        subject's key was destroyed). Raises if the sealed values do not open."""
        if SEALED_KEY in self.state:
            assert self._keyring is not None, "a sealed payload needs the log's keyring"
            self.open_with(self._keyring.key(UUID(self.originator_id)))
        return self.state

    def open_with(self, key: bytes | None) -> None:
        """Unseal in place (opening twice opens once); a payload that does not open
        stays sealed, so that it fails again when its page is applied again."""
        bound = f"{self.topic}|{self.originator_id}|{self.originator_version}".encode()
        sealed = self.state.get(SEALED_KEY)
        try:
            unseal(self.state, key, bound)
        except Exception:
            self.state[SEALED_KEY] = sealed
            raise


PageItem: TypeAlias = tuple[int, "Recorded | Undecodable"]


class _Topic(NamedTuple):
    """What the reader knows of a topic, worked out once."""

    wanted: bool  # some read model reads it
    known: bool  # this release has an event class for it
    keys: frozenset[str]  # the payload keys this release writes for it
    sealed_keys: frozenset[str]  # the same with sealed personal values
    version: int  # the class's schema version


@cache  # the projector makes a reader for every catch-up
def _topic(topic: str, wanted: bool) -> _Topic:
    try:
        event_class = resolve_topic(topic)
        keys = frozenset(event_class.model_fields) - HEADER | {SCHEMA_VERSION_KEY}
        version = int(event_class.class_version)
    except Exception:  # unknown topic: the domain's decoding says why
        return _Topic(wanted, False, frozenset(), frozenset(), 0)
    return _Topic(wanted, True, keys, keys | {SEALED_KEY}, version)


class LogReader:
    """Reads pages of one log for the read models. ``wanted``: whether any read
    model reads a topic; events of other (known) topics are passed over undecoded.
    ``trusted=False`` sends every event through the domain's decoding (slower: for
    holding the shortcut to it)."""

    def __init__(self, log: LedgerLog, wanted: Callable[[str], bool], trusted: bool = True) -> None:
        self.log = log
        self.wanted = wanted
        self.trusted = trusted
        self.keyring: KeyRing | None = getattr(log, "keyring", None)
        # Whether any event read so far went through the domain's decoding (not what
        # this release writes, or an unknown topic): set-based rebuilds are then
        # not to be trusted (``projections.bulk``).
        self.irregular = False
        self._topics: dict[str, _Topic] = {}
        recorder: Any = log.recorder
        self._postgres = isinstance(recorder, PostgresApplicationRecorder)
        self._select_statement: Composed | str
        if self._postgres:
            self._select_statement = SQL(
                "SELECT notification_id, originator_id::text, originator_version, topic, state "
                "FROM {}.{} WHERE notification_id >= %s AND notification_id <= %s "
                "ORDER BY notification_id LIMIT %s"
            ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        else:
            self._select_statement = (
                "SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {recorder.events_table_name} WHERE rowid >= ? AND rowid <= ? "
                "ORDER BY rowid LIMIT ?"
            )

    def rows(self, start: int, limit: int, stop: int | None = None) -> Sequence[RawRow]:
        last = stop if stop is not None else 2**63 - 1
        if self._postgres:
            rows: list[RawRow] = self._postgres_rows(start, last, limit)
            return rows
        datastore: Any = self.log.recorder.datastore  # type: ignore[attr-defined]
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(self._select_statement, (start, last, limit))
            fetched: list[RawRow] = cursor.fetchall()
            return fetched

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _postgres_rows(self, start: int, last: int, limit: int) -> list[RawRow]:
        datastore: Any = self.log.recorder.datastore  # type: ignore[attr-defined]
        with (
            datastore.get_connection() as connection,
            connection.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(self._select_statement, (start, last, limit), prepare=True)
            return list(cursor.fetchall())

    def decode(self, rows: Sequence[RawRow]) -> list[PageItem]:
        mapper: Any = self.log.mapper
        if mapper.cipher is not None or mapper.compressor is not None or not self.trusted:
            self.irregular = self.irregular or bool(rows)
            return [
                (row[0], self._decode_slowly(row))
                for row in rows
                if self.wanted(row[3]) or not self._topic_of(row[3]).known
            ]
        topics, keyring, loads = self._topics, self.keyring, orjson.loads
        items: list[PageItem] = []
        dashed: dict[str, str] = {}
        for row in rows:
            position, originator_id, version, topic, stored = row
            known = topics.get(topic) or self._topic_of(topic)
            if not known.wanted:
                if not known.known:
                    items.append((position, self._decode_slowly(row)))
                continue
            if len(originator_id) == 32:  # SQLite keeps ids as 32 hex digits; read models dashed
                text = dashed.get(originator_id)  # an aggregate's events mostly come together
                if text is None:
                    h = originator_id
                    text = dashed[h] = "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
                originator_id = text
            try:
                state = loads(stored)
                keys = state.keys()
                if not (keys == known.keys or keys == known.sealed_keys):
                    raise ValueError
                if state.pop(SCHEMA_VERSION_KEY) != known.version:
                    raise ValueError
            except (ValueError, AttributeError):  # not what this release writes
                items.append((position, self._decode_slowly(row)))
                continue
            items.append((position, Recorded(originator_id, version, topic, state, keyring)))
        return items

    def _topic_of(self, topic: str) -> _Topic:
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = _topic(topic, self.wanted(topic))
        return known

    def _decode_slowly(self, row: RawRow) -> Recorded | Undecodable:
        """The domain's own decoding: upcasting, unsealing, validation."""
        self.irregular = True
        position, originator_id, version, topic, stored = row
        notification = Notification(
            id=position, originator_id=UUID(originator_id), originator_version=version,
            topic=topic, state=bytes(stored),
        )  # fmt: skip
        try:
            event: DomainEvent[Any] = self.log.mapper.to_domain_event(notification)  # type: ignore[assignment]
        except Exception as error:
            return Undecodable(UUID(originator_id), version, topic, describe(error))
        return Recorded.of(event)


def open_all(records: Sequence[Recorded]) -> None:
    """Unseal the personal values of ``records`` (of one log), their data keys read
    in one query and looked up once per subject."""
    sealed = [r for r in records if SEALED_KEY in r.state]
    if not sealed:
        return
    keyring = sealed[0]._keyring
    assert keyring is not None, "a sealed payload needs the log's keyring"
    subjects = {text: UUID(text) for text in {r.originator_id for r in sealed}}
    keyring.prefetch(subjects.values())
    keys = {text: keyring.key(subject) for text, subject in subjects.items()}
    for record in sealed:
        record.open_with(keys[record.originator_id])
