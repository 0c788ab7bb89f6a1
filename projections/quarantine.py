"""Applying a page so that no event can stop a read model (see ``dead_letters``):
an event that cannot be applied is set aside, and its aggregate held, in the same
transaction as the position that moves past it; a store failure is raised for
the runner to retry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any, TypeAlias
from uuid import UUID

from eventsourcing.persistence import Notification, Tracking

from idledger.domain.base import DomainEvent
from idledger.domain.sealing import SEALED_KEY
from idledger.projections.dead_letters import (
    HELD,
    DeadLetter,
    Undecodable,
    describe,
    is_store_failure,
)
from idledger.projections.records import PageItem, Recorded

if TYPE_CHECKING:
    from idledger.domain.service import LedgerLog
    from idledger.projections.engine import Follower

log = logging.getLogger(__name__)

Decoded: TypeAlias = tuple[int, "DomainEvent[Any] | Undecodable"]


def decode(log_: LedgerLog, notifications: Sequence[Notification]) -> list[Decoded]:
    """Decode a page; a notification that does not decode becomes ``Undecodable``."""
    keyring = getattr(log_, "keyring", None)
    if keyring is not None:  # the page's data keys in one query, not one per subject
        sealed = f'"{SEALED_KEY}"'.encode()
        keyring.prefetch(UUID(str(n.originator_id)) for n in notifications if sealed in n.state)
    try:
        return [(n.id, log_.mapper.to_domain_event(n)) for n in notifications]  # type: ignore[misc]
    except Exception:  # rare: find which ones, one at a time
        return [(n.id, _decode_one(log_, n)) for n in notifications]


def _decode_one(log_: LedgerLog, notification: Notification) -> DomainEvent[Any] | Undecodable:
    try:
        event: DomainEvent[Any] = log_.mapper.to_domain_event(notification)  # type: ignore[assignment]
    except Exception as error:
        return Undecodable(
            notification.originator_id, notification.originator_version,  # type: ignore[arg-type]
            notification.topic, describe(error),
        )  # fmt: skip
    return event


def apply_guarded(follower: Follower, items: Sequence[PageItem], last_position: int) -> None:
    """Apply ``items`` and move the position to ``last_position``. A failing page is
    split in halves until the failing event stands alone and is dead-lettered."""
    events, letters = _set_aside(items, follower.held())
    tracking = Tracking(follower.log.name, last_position)
    try:
        follower.projection.process_page(events, tracking, letters)
    except Exception as error:
        if is_store_failure(error) or not items:
            raise
        if len(items) > 1:
            middle = len(items) // 2
            apply_guarded(follower, items[:middle], items[middle - 1][0])
            apply_guarded(follower, items[middle:], last_position)
            return
        (position, item), reason = items[0], describe(error)
        letters = [_letter(position, item, reason)]
        follower.projection.process_page([], tracking, letters)
    follower.hold(letters)
    for letter in letters:
        if letter.error != HELD:
            log.error(
                "event at log position %d (%s, aggregate %s v%d) could not be applied to %s "
                "and is dead-lettered: %s", letter.position, letter.topic,
                letter.originator_id, letter.originator_version, follower.name, letter.error,
            )  # fmt: skip


def _set_aside(
    items: Sequence[PageItem], held_before: set[str]
) -> tuple[list[Recorded], list[DeadLetter]]:
    """The events to apply, and dead letters for the rest: those that do not decode,
    and every later event of their aggregates and of aggregates held before."""
    if not held_before and not any(type(item) is Undecodable for _, item in items):
        return [item for _, item in items], []  # type: ignore[misc]  # the usual page
    held = set(held_before)
    letters: list[DeadLetter] = []
    events: list[Recorded] = []
    for position, item in items:
        if isinstance(item, Undecodable):
            letters.append(_letter(position, item, item.error))
        elif item.originator_id in held:
            letters.append(_letter(position, item, HELD))
        else:
            events.append(item)
            continue
        held.add(letters[-1].originator_id)
    return events, letters


def _letter(position: int, item: Recorded | Undecodable, error: str) -> DeadLetter:
    return DeadLetter(position, str(item.originator_id), item.originator_version, item.topic, error)


@dataclass(frozen=True)
class Retried:
    """What a retry of one read model's dead letters did."""

    applied: int  # dead letters applied and released
    still_held: int  # dead letters left (their aggregate still fails)


def retry(follower: Follower) -> Retried:
    """Apply each held aggregate's dead letters again, in log order, each
    aggregate in one transaction; those that apply are released. The caller holds
    the read model's runner lock."""
    letters = follower.view.dead_letters()
    applied = 0
    for _, group in groupby(sorted(letters, key=_by_aggregate), key=lambda x: x.originator_id):
        mine = list(group)
        positions = [letter.position for letter in mine]
        notifications = [
            follower.log.recorder.select_notifications(start=position, limit=1)[0]
            for position in positions
        ]
        decoded = [item for _, item in decode(follower.log, notifications)]
        events = [item for item in decoded if not isinstance(item, Undecodable)]
        if len(events) < len(decoded):
            continue
        try:
            follower.projection.process_page(events, None, released=positions)
        except Exception as error:
            if is_store_failure(error):
                raise
            log.warning(
                "dead letters of aggregate %s still fail: %s",
                mine[0].originator_id,
                describe(error),
            )
            continue
        applied += len(mine)
    follower.forget_held()
    return Retried(applied, len(letters) - applied)


def _by_aggregate(letter: DeadLetter) -> tuple[str, int]:
    return letter.originator_id, letter.position
