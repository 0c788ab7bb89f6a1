"""Large logs written fast: the domain's own aggregates and mapper, saved in big
batches straight to the recorder (the command path, one save per command, would
take hours for a million users)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from idledger.domain.base import Aggregate
from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, Claim, claim_id, token_namespace
from idledger.domain.ledger import Ledger
from idledger.domain.subscription import Subscription
from idledger.domain.user import User
from idledger.domain.values import OwnershipCause, SubscriptionSpec, SubscriptionType

BATCH = 20_000


def identified_user(
    ledger: Ledger, app_id: UUID, number: int, at: datetime
) -> tuple[User, Subscription, list[Aggregate]]:
    """User ``person-<number>`` with one Android push subscription, and the claims
    that make its external id and token unique: what a device login leaves."""
    external_id, token = f"person-{number}", f"token-{number}"
    user = User.create(app_id, at)
    spec = SubscriptionSpec(type=SubscriptionType.ANDROID_PUSH, token=token)
    push = Subscription.create(app_id, spec, user.id, OwnershipCause.DEVICE, at)
    user.attach(push.id, push.type, at)
    user.set_external_id(external_id, at)
    token_key = claim_id(ledger.index_key, app_id, token_namespace(spec.type), token)
    external_key = claim_id(ledger.index_key, app_id, EXTERNAL_ID_NAMESPACE, external_id)
    claims: list[Aggregate] = [
        Claim.first(token_key, push.id, at),
        Claim.first(external_key, user.id, at),
    ]
    return user, push, claims


class BatchWriter:
    """Collects aggregates' new events and inserts them BATCH at a time."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pending: list[Any] = []
        self.written: int = 0

    def add(self, *aggregates: Aggregate) -> None:
        for aggregate in aggregates:
            self.pending.extend(
                self.ledger.mapper.to_stored_event(event) for event in aggregate.collect_events()
            )
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.ledger.recorder.insert_events(self.pending)
            self.written += len(self.pending)
            self.pending = []
