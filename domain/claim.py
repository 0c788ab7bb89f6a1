"""Claims: tiny index aggregates that make a value unique within an app.

A claim's id is derived from (app, namespace, value) with a keyed hash, so the
store can find it without a read model and nobody can read the value back from
the id. Two writers claiming the same value both write version N+1 of the same
aggregate; the database's unique key lets exactly one of them commit.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from uuid import UUID

from idledger.domain.base import Aggregate, CreationEvent, DomainEvent


def claim_id(index_key: bytes, app_id: UUID, namespace: str, value: str) -> UUID:
    message = "\x1f".join((str(app_id), namespace, value)).encode()
    return UUID(bytes=hmac.new(index_key, message, hashlib.sha256).digest()[:16])


EXTERNAL_ID_NAMESPACE = "external_id"


def alias_namespace(label: str) -> str:
    return f"alias:{label}"


def token_namespace(subscription_type: str) -> str:
    return f"token:{subscription_type}"


class Claim(Aggregate):
    """Who holds a unique value now: a user (for an alias) or a subscription (for a token)."""

    holder_id: UUID | None

    @classmethod
    def first(cls, claim_id: UUID, holder_id: UUID, at: datetime) -> Claim:
        return cls._start(
            ClaimOpened(
                originator_id=claim_id, originator_version=1, timestamp=at, holder_id=holder_id
            )
        )

    def take(self, holder_id: UUID, at: datetime) -> None:
        assert self.holder_id is None, "take() needs a released claim"
        self._trigger(ClaimTaken(**self._next(at), holder_id=holder_id))

    def release(self, at: datetime) -> None:
        assert self.holder_id is not None, "release() needs a held claim"
        self._trigger(ClaimReleased(**self._next(at), holder_id=self.holder_id))


class ClaimOpened(CreationEvent[Claim]):
    TOPIC = "idledger.claim:Opened"

    holder_id: UUID

    def blank(self) -> Claim:
        return Claim.__new__(Claim)

    def apply(self, aggregate: Claim) -> None:
        aggregate.holder_id = self.holder_id


class ClaimTaken(DomainEvent[Claim]):
    TOPIC = "idledger.claim:Taken"

    holder_id: UUID

    def apply(self, aggregate: Claim) -> None:
        aggregate.holder_id = self.holder_id


class ClaimReleased(DomainEvent[Claim]):
    TOPIC = "idledger.claim:Released"

    holder_id: UUID

    def apply(self, aggregate: Claim) -> None:
        aggregate.holder_id = None
