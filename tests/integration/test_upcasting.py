"""An event stored under an older schema version is upcast when read, by the
domain and by a replay of the read models, on each store."""

from __future__ import annotations

import json

from eventsourcing.persistence import StoredEvent

from idledger.domain.ledger import Ledger
from idledger.projections.service import ReadModels
from tests.helpers import caught_up
from tests.unit.test_mapper import NicknameSet


def test_a_version_one_payload_is_upcast_and_replayed(
    store: dict[str, str], ledger: Ledger
) -> None:
    app_id = ledger.create_app("upgrade").app_id
    user_id = ledger.create_user(app_id, external_id="EIDA").user_id
    version = ledger.read(app_id).user(user_id).version
    written_by_an_older_release = {
        "timestamp": "2026-01-01T00:00:00+00:00", "actor": "system", "name": "Al",
        "schema_version": 1,
    }  # fmt: skip
    ledger.recorder.insert_events(
        [
            StoredEvent(
                originator_id=user_id,
                originator_version=version + 1,
                topic=NicknameSet.TOPIC,
                state=json.dumps(written_by_an_older_release).encode(),
            )
        ]
    )

    user = ledger.read(app_id).user(user_id)
    models = ReadModels(store, ["profiles"])
    try:
        projected = caught_up(models).profiles.user(app_id, user_id)
    finally:
        models.close()

    assert NicknameSet.class_version == 2
    assert user.tags == {"nickname": "Al"}
    assert projected is not None
    assert projected.tags == {"nickname": "Al"}
