"""Forgetting a person (GDPR art. 17, CCPA): the user is deleted as a plain
delete would, an ``Erased`` event records which data keys go, and those keys are
destroyed in the same transaction. The log keeps its shape (ids, times, causes,
ownership, sessions); every personal value sealed under those keys, in the log,
its snapshots, exports and backups, becomes unreadable at once.

Whose keys: the user's own, and those of every subscription whose last owner is
the user (deleted with it, or before). A subscription that moved on to someone
else belongs to that person now and keeps its key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from idledger.domain.errors import UserNotFound
from idledger.domain.ownership import remove_user
from idledger.domain.subscription import SubscriptionDeleted
from idledger.domain.unit_of_work import UnitOfWork
from idledger.domain.user import SubscriptionAttached, UserErased

if TYPE_CHECKING:
    from idledger.domain.service import LedgerBase


@dataclass(frozen=True)
class Erasure:
    position: int | None
    user_id: UUID
    subscriptions: list[UUID]
    already: bool  # erased before: nothing was written


def erase_user(ledger: LedgerBase, app_id: UUID, user_id: UUID) -> Erasure:
    ledger.read(app_id).any_user(user_id)  # of this app (another app's: not found)
    history = _history(ledger, user_id)
    erased = [event for event in history if isinstance(event, UserErased)]
    if erased:
        # Destroyed again: harmless, and it undoes a restored key-table backup.
        subjects = [user_id, *erased[-1].subscriptions]
        ledger.recorder.destroy(subjects)  # type: ignore[attr-defined]
        ledger.keyring.forget(subjects)
        return Erasure(None, user_id, erased[-1].subscriptions, already=True)
    ever_attached = {e.subscription_id for e in history if isinstance(e, SubscriptionAttached)}

    def erase(uow: UnitOfWork) -> list[UUID]:
        user = uow.any_user(user_id)
        held = set(user.subscriptions) if user.is_live else set()
        deleted_here = {s for s in ever_attached - held if _deleted_from(ledger, s) == user_id}
        if user.is_live:
            remove_user(uow, user)
        owned = sorted(held | deleted_here, key=str)
        user.erase(owned, uow.at)
        uow.keys_to_destroy = [user_id, *owned]
        return owned

    owned, position = ledger._run(app_id, erase)
    ledger.keyring.forget([user_id, *owned])
    ledger.recorder.wipe_freed_pages()  # type: ignore[attr-defined]
    return Erasure(position, user_id, owned, already=False)


def _history(ledger: LedgerBase, user_id: UUID) -> list[object]:
    try:
        return list(ledger.events.get(user_id))
    except AggregateNotFoundError:
        raise UserNotFound(user_id) from None


def _deleted_from(ledger: LedgerBase, subscription_id: UUID) -> UUID | None:
    """Whose subscription it was when it was deleted (``None``: not deleted)."""
    last = next(iter(ledger.events.get(subscription_id, desc=True, limit=1)), None)
    return last.owner_id if isinstance(last, SubscriptionDeleted) else None
