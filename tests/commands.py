"""Random command sequences for property tests: a small world of devices and people."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from hypothesis import strategies as st

from idledger.domain.errors import LedgerError
from idledger.domain.ledger import Ledger
from idledger.domain.values import OwnershipCause
from tests.helpers import email, ios, web

TOKENS = 6
EXTERNAL_IDS = ["alice", "bob", "carol"]


@dataclass(frozen=True)
class Step:
    kind: str
    token: int
    other: int = 0
    external_id: str = "alice"


KINDS = [
    "device", "login", "logout", "transfer", "email", "identify", "session", "delete_user",
    "delete_subscription",
]  # fmt: skip
tokens = st.integers(0, TOKENS - 1)
step = st.builds(Step, st.sampled_from(KINDS), tokens, tokens, st.sampled_from(EXTERNAL_IDS))


@dataclass
class World:
    ledger: Ledger
    app_id: UUID
    subscriptions: dict[int, UUID] = field(default_factory=dict)
    users: set[UUID] = field(default_factory=set)
    instants: list[datetime] = field(default_factory=list)

    def owner(self, token: int) -> UUID | None:
        subscription_id = self.subscriptions.get(token)
        if subscription_id is None:
            return None
        return self.ledger.owner_of(subscription_id, self.ledger.clock())

    def run(self, step: Step) -> None:
        kind, token = step.kind, step.token
        ledger, app_id, subscription_id = self.ledger, self.app_id, self.subscriptions.get(token)
        if kind == "device":
            outcome = ledger.create_user(
                app_id, subscriptions=[ios(f"ios-{token}") if token % 2 else web(f"w-{token}")],
                cause=OwnershipCause.DEVICE,
            )  # fmt: skip
            self.users.add(outcome.user_id)
            (self.subscriptions[token],) = ledger.read(app_id).user(outcome.user_id).subscriptions
        elif subscription_id is None:
            return
        elif kind == "login":
            self.users.add(ledger.login(app_id, subscription_id, step.external_id).user_id)
        elif kind == "logout":
            self.users.add(ledger.logout(app_id, subscription_id).user_id)
        elif (owner := self.owner(token)) is None:
            return
        elif kind == "transfer" and (target := self.owner(step.other)):
            ledger.transfer_subscription(app_id, subscription_id, target)
        elif kind == "email":
            ledger.create_subscription(app_id, owner, email(f"{step.other}@x.io"))
        elif kind == "identify":
            ledger.set_external_id(app_id, owner, step.external_id)
        elif kind == "session":
            ledger.record_session(app_id, subscription_id, session_time=30)
        elif kind == "delete_user":
            ledger.delete_user(app_id, owner)
        elif kind == "delete_subscription":
            ledger.delete_subscription(app_id, subscription_id)


def play(ledger: Ledger, steps: list[Step]) -> World:
    """Every token starts on a device of its own; then the steps run, refused
    ones included (a refusal must leave everything intact too)."""
    world = World(ledger, ledger.create_app("property").app_id)
    for token in range(TOKENS):
        world.run(Step("device", token))
    for each in steps:
        with suppress(LedgerError):
            world.run(each)
        world.instants.append(ledger.clock())
    return world
