"""The App aggregate: a tenant with its REST API keys (stored only as hashes)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import Field

from idledger.domain.base import Aggregate, CreationEvent, DomainEvent
from idledger.domain.errors import InvalidValue

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    # Keys are 256 random bits, so a plain SHA-256 is as strong as a slow hash here.
    return hashlib.sha256(api_key.encode()).hexdigest()


class App(Aggregate):
    name: str
    api_key_hash: str

    @classmethod
    def create(cls, name: str, api_key: str, at: datetime, app_id: UUID | None = None) -> App:
        """A new app; ``app_id`` is chosen by the caller when it must know the id
        first (to choose the app's partition), else a fresh UUIDv4."""
        if not name.strip() or len(name) > 200:
            raise InvalidValue("name", "must be 1-200 characters, not blank")
        return cls._start(
            AppCreated(
                originator_id=app_id or uuid4(),
                originator_version=1,
                timestamp=at,
                name=name,
                api_key_hash=hash_api_key(api_key),
            )
        )

    def rotate_api_key(self, api_key: str, at: datetime) -> None:
        self._trigger(ApiKeyRotated(**self._next(at), api_key_hash=hash_api_key(api_key)))

    def accepts(self, api_key: str) -> bool:
        return hmac.compare_digest(hash_api_key(api_key), self.api_key_hash)


class AppCreated(CreationEvent[App]):
    TOPIC = "idledger.app:Created"

    name: Annotated[str, Field(min_length=1, max_length=200)]
    api_key_hash: Sha256Hex

    def blank(self) -> App:
        return App.__new__(App)

    def apply(self, aggregate: App) -> None:
        aggregate.name = self.name
        aggregate.api_key_hash = self.api_key_hash


class ApiKeyRotated(DomainEvent[App]):
    """The previous key stops working at once."""

    TOPIC = "idledger.app:ApiKeyRotated"

    api_key_hash: Sha256Hex

    def apply(self, aggregate: App) -> None:
        aggregate.api_key_hash = self.api_key_hash
