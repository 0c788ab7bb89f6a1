"""The ledger's own errors. Each names what is wrong; the HTTP layer maps kinds to
status codes (invalid -> 400, not found -> 404, conflict -> 409)."""

from __future__ import annotations

from uuid import UUID


class LedgerError(Exception):
    """Base of every error the ledger reports on purpose."""

    code = "ledger-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidValue(LedgerError):
    """A field broke a rule; nothing was written."""

    code = "invalid-value"

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(LedgerError):
    code = "not-found"


class AppNotFound(NotFound):
    def __init__(self, app_id: UUID | str) -> None:
        super().__init__(f"app {app_id} not found")


class UserNotFound(NotFound):
    def __init__(self, user: UUID | str) -> None:
        super().__init__(f"user {user} not found")


class UserRetired(UserNotFound):
    """The user was merged into another at login; history can follow ``survivor_id``."""

    def __init__(self, user_id: UUID, survivor_id: UUID) -> None:
        super().__init__(user_id)
        self.user_id = user_id
        self.survivor_id = survivor_id


class SubscriptionNotFound(NotFound):
    def __init__(self, subscription: UUID | str) -> None:
        super().__init__(f"subscription {subscription} not found")


class Conflict(LedgerError):
    code = "conflict"


class AliasConflict(Conflict):
    """An external_id or alias already belongs to another user of the app."""

    code = "user-2"

    def __init__(self, conflicting: dict[str, str]) -> None:
        labels = ", ".join(sorted(conflicting))
        super().__init__(f"alias already claimed by another user: {labels}")
        self.conflicting = conflicting


class ConcurrencyConflict(Conflict):
    """Other writers kept changing the same aggregates; the command may be retried."""

    code = "concurrency-conflict"
    retryable = True

    def __init__(self, command: str, attempts: int) -> None:
        super().__init__(
            f"{command} lost {attempts} optimistic-concurrency races in a row; retry it"
        )


class AliasNotFound(NotFound):
    def __init__(self, label: str) -> None:
        super().__init__(f"the user has no alias labelled {label!r}")
