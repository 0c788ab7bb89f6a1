"""What every read model shares: a library ``Projection`` whose events are
applied through a ``Writer``, one event at a time (``process_event``, as the
library's runners call it) or a page at a time (``process_page``, our catch-up
loop), the rows and the position always committed together.

Read models apply ``Recorded`` events (plain payloads, ids as text: see
``projections.records``); a decoded domain event handed over is turned into one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from idledger.domain.base import DomainEvent
from idledger.projections.dead_letters import DeadLetter
from idledger.projections.records import Recorded
from idledger.projections.sql import SqlView, Writer

V = TypeVar("V", bound=SqlView)


def micros(moment: datetime) -> int:
    """Times are stored as integer microseconds since the epoch: exact, and
    ordered the same way on SQLite and PostgreSQL."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def micros_of(iso: str) -> int:
    """``micros`` of a time as the log writes it (ISO 8601)."""
    return micros(datetime.fromisoformat(iso))


class Page(Protocol):
    """A page of events applied inside one transaction."""

    def apply(self, event: Recorded) -> None: ...

    def flush(self) -> None: ...


class ReadModel(Projection[V], Generic[V]):
    TOPICS: ClassVar[frozenset[str]]  # the topics whose events change this read model

    def __init__(self, view: V) -> None:
        super().__init__(view)
        self._read: set[str] = set()  # ``reads`` answers, kept: asked for every event
        self._ignored: set[str] = set()

    @classmethod
    def reads(cls, topic: str) -> bool:
        return topic in cls.TOPICS

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.process_page([domain_event], tracking)

    def process_page(
        self,
        events: Sequence[Recorded | DomainEvent[Any]],
        tracking: Tracking | None,
        dead_letters: Sequence[DeadLetter] = (),
        released: Sequence[int] = (),
    ) -> None:
        read, ignored = self._read, self._ignored
        with self.view.writing(tracking, dead_letters, released) as writer:
            page = self.open_page(writer)
            apply = page.apply
            for event in events:
                record = event if isinstance(event, Recorded) else Recorded.of(event)
                topic = record.topic
                if topic not in read and topic not in ignored:
                    (read if self.reads(topic) else ignored).add(topic)
                if topic in read:
                    apply(record)
            page.flush()
        if getattr(page, "erased", False):
            self.view.wipe_freed_pages()

    def open_page(self, writer: Writer) -> Page:
        """Read models that gain from folding a page in memory return their own page;
        the default writes each event as it comes, through ``apply``."""
        return _EventByEvent(self, writer)

    def apply(self, writer: Writer, event: Recorded) -> None:
        """Write what ``event`` changes; events of no interest change nothing."""
        raise NotImplementedError


class _EventByEvent:
    def __init__(self, model: ReadModel[Any], writer: Writer) -> None:
        self.model, self.writer = model, writer

    def apply(self, event: Recorded) -> None:
        self.model.apply(self.writer, event)

    def flush(self) -> None:
        pass
