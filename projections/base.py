"""What every read model shares: a library ``Projection`` whose events are
applied through a ``Writer``, one event at a time (``process_event``, as the
library's runners call it) or a page at a time (``process_page``, our catch-up
loop), the rows and the position always committed together."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from domain.base import DomainEvent
from projections.sql import SqlView, Writer

V = TypeVar("V", bound=SqlView)


def micros(moment: datetime) -> int:
    """Times are stored as integer microseconds since the epoch: exact, and
    ordered the same way on SQLite and PostgreSQL."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class ReadModel(Projection[V], Generic[V]):
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        with self.view.writing(tracking) as writer:
            self.apply(writer, domain_event)

    def process_page(self, events: Sequence[DomainEvent[Any]], tracking: Tracking) -> None:
        with self.view.writing(tracking) as writer:
            for event in events:
                self.apply(writer, event)

    def apply(self, writer: Writer, event: DomainEvent[Any]) -> None:
        """Write what ``event`` changes; events of no interest change nothing."""
        raise NotImplementedError
