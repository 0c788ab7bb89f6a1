"""Kill the projector (a real process, SIGKILL) at random points while it catches
up; after restarts the read models equal those of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from idledger.domain.ledger import Ledger
from idledger.domain.service import LedgerLog
from idledger.projections.service import Projector, ReadModels
from idledger.replay.transfer import export_lines, import_events
from tests.conftest import INDEX_KEY, fresh_store, store_url
from tests.helpers import device_user, ios

USERS = 300  # about 3,000 events


def fill_log(env: dict[str, str]) -> int:
    ledger = Ledger(env, index_key=INDEX_KEY)
    try:
        app_id = ledger.create_app("crash").app_id
        for number in range(USERS):
            user_id, push = device_user(ledger, app_id, ios(f"phone-{number}"))
            ledger.login(app_id, push, f"person-{number % (USERS // 2)}")
            ledger.record_session(app_id, push)
            ledger.change_tags(app_id, ledger.owner_of(push, ledger.clock()) or user_id, {"n": "1"})
        return ledger.recorder.max_notification_id() or 0
    finally:
        ledger.close()


def copy_log(source: dict[str, str], target: dict[str, str]) -> None:
    origin, copy = LedgerLog(source), LedgerLog(target)
    try:
        lines = export_lines(origin, index_key=INDEX_KEY)
        import_events(copy, lines, index_key=INDEX_KEY, keys_from=origin)
    finally:
        origin.close()
        copy.close()


def project_in_process(env: dict[str, str]) -> dict[str, object]:
    models = ReadModels(env)
    projector = Projector(models)
    try:
        projector.run_once()
        return {name: f.view.dump() for name, f in models.followers.items()}
    finally:
        projector.release()
        models.close()


def project_with_kills(env: dict[str, str], seed: int) -> int:
    """Run `idledger project` until it finishes by itself; return how often it was killed."""
    rng = random.Random(seed)
    command = [str(Path(sys.executable).with_name("idledger")), "project", "--page-size", "1"]
    process_env = {**os.environ, "IDLEDGER_STORE_URL": store_url(env)}
    kills = 0
    while True:
        process = subprocess.Popen(
            command, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            output, _ = process.communicate(timeout=rng.uniform(0.3, 0.9) if kills < 30 else 300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            kills += 1
            continue
        assert process.returncode == 0, output.decode()
        return kills


@pytest.mark.slow
def test_a_killed_projector_resumes_exactly_once(store_kind: str) -> None:
    with fresh_store(store_kind) as env, fresh_store(store_kind) as reference:
        events = fill_log(env)
        copy_log(env, reference)
        expected = project_in_process(reference)

        kills = project_with_kills(env, seed=events)

        assert events > 2_500
        assert kills > 0, "the projector should have been killed mid-way at least once"
        assert project_in_process(env) == expected
