"""What every read model shares: a library ``Projection`` whose events are
applied through a ``Writer``, one event at a time (``process_event``, as the
library's runners call it) or a page at a time (``process_page``, our catch-up
loop), the rows and the position always committed together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from idledger.domain.base import DomainEvent
from idledger.projections.dead_letters import DeadLetter
from idledger.projections.sql import SqlView, Writer

V = TypeVar("V", bound=SqlView)


def micros(moment: datetime) -> int:
    """Times are stored as integer microseconds since the epoch: exact, and
    ordered the same way on SQLite and PostgreSQL."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class Page(Protocol):
    """A page of events applied inside one transaction."""

    def apply(self, event: DomainEvent[Any]) -> None: ...

    def flush(self) -> None: ...


class ReadModel(Projection[V], Generic[V]):
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.process_page([domain_event], tracking)

    def process_page(
        self,
        events: Sequence[DomainEvent[Any]],
        tracking: Tracking | None,
        dead_letters: Sequence[DeadLetter] = (),
        released: Sequence[int] = (),
    ) -> None:
        with self.view.writing(tracking, dead_letters, released) as writer:
            page = self.open_page(writer)
            for event in events:
                page.apply(event)
            page.flush()
        if getattr(page, "erased", False):
            self.view.wipe_freed_pages()

    def open_page(self, writer: Writer) -> Page:
        """Read models that gain from folding a page in memory return their own page;
        the default writes each event as it comes, through ``apply``."""
        return _EventByEvent(self, writer)

    def apply(self, writer: Writer, event: DomainEvent[Any]) -> None:
        """Write what ``event`` changes; events of no interest change nothing."""
        raise NotImplementedError


class _EventByEvent:
    def __init__(self, model: ReadModel[Any], writer: Writer) -> None:
        self.model, self.writer = model, writer

    def apply(self, event: DomainEvent[Any]) -> None:
        self.model.apply(self.writer, event)

    def flush(self) -> None:
        pass
