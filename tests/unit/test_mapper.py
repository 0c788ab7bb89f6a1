"""Stored form of events: round trips and upcasting from an older schema version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from idledger.domain.base import DomainEvent
from idledger.domain.mapper import JsonTranscoder, PydanticMapper, event_state
from idledger.domain.user import TagsChanged, User


class NicknameSet(DomainEvent[User]):
    """A test event at schema version 2: v1 stored ``name``, v2 stores ``nickname``."""

    TOPIC = "tests.unit:NicknameSet"
    class_version = 2

    nickname: str

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["nickname"] = state.pop("name")

    def apply(self, aggregate: User) -> None:
        aggregate.tags["nickname"] = self.nickname


def test_events_round_trip_through_the_stored_form() -> None:
    mapper = PydanticMapper(transcoder=JsonTranscoder())
    event = TagsChanged(
        originator_id=uuid4(), originator_version=3, timestamp=datetime.now(UTC),
        assigned={"a": "1"}, removed=["b"],
    )  # fmt: skip

    stored = mapper.to_stored_event(event)

    assert stored.topic == "idledger.user:TagsChanged"
    assert mapper.to_domain_event(stored) == event


def test_an_old_schema_version_is_upcast_when_read() -> None:
    mapper = PydanticMapper(transcoder=JsonTranscoder())
    current = NicknameSet(
        originator_id=uuid4(), originator_version=2, timestamp=datetime.now(UTC), nickname="Al"
    )
    v1_state = event_state(current)
    v1_state["name"] = v1_state.pop("nickname")
    v1_state["schema_version"] = 1
    stored = mapper.to_stored_event(current)
    old = type(stored)(
        originator_id=stored.originator_id, originator_version=stored.originator_version,
        topic=stored.topic, state=JsonTranscoder().encode(v1_state),
    )  # fmt: skip

    assert mapper.to_domain_event(old) == current
