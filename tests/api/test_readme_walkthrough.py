"""The README's curl walkthrough, taken from the README itself and run by bash, in
order, against a real `idledger serve`: every step answers as the README says."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.api.conftest import ADMIN_KEY
from tests.conftest import store_url
from tests.serving import serving

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### A walkthrough with curl"
# Each curl also writes its status to stderr; each block is announced on both streams.
PREAMBLE = """\
set -euo pipefail
curl() { command curl --show-error --write-out '%{stderr}%{http_code}\\n' "$@"; }
"""
# The statuses of each block, in order.
STATUSES = [[], [200], [201, 201], [200], [202, 200], [200], [200, 200, 200, 200, 200]]


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks of the walkthrough section, up to the next heading."""
    lines = README.read_text().splitlines()
    blocks: list[str] = []
    current: list[str] | None = None
    in_fence = False
    for line in lines[lines.index(SECTION) + 1 :]:
        if line.startswith("```"):
            if in_fence and current is not None:
                blocks.append("\n".join(current))
            in_fence, current = not in_fence, ([] if line.strip() == "```sh" else None)
        elif in_fence:
            if current is not None:
                current.append(line)
        elif line.startswith("#"):
            break
    return blocks


def split_by_block(text: str) -> list[str]:
    parts = text.split("<<block ")
    return [part.split(">>\n", 1)[1] for part in parts[1:]]


def documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after the other."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        value, position = decoder.raw_decode(text, position)
        found.append(value)
    return found


def test_the_readme_walkthrough_works_when_pasted(store: dict[str, str], tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == len(STATUSES), "the walkthrough changed: update STATUSES"
    script = PREAMBLE + "".join(
        f'echo "<<block {number}>>"; echo "<<block {number}>>" >&2\n{block}\n'
        for number, block in enumerate(blocks)
    )
    with serving(store_url(store), tmp_path / "server.log") as base:
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "H": base, "ADMIN": ADMIN_KEY},
        )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    statuses = [[int(s) for s in part.split()] for part in split_by_block(done.stderr)]
    assert statuses == STATUSES, done.stderr
    out = [documents(part) for part in split_by_block(done.stdout)]
    (app,) = out[1]
    assert app["name"] == "My app"
    assert app["basic_auth_key"]
    alice, bob = out[2]
    assert alice["identity"]["external_id"] == "alice"
    assert alice["properties"]["tags"] == {"plan": "gold"}
    assert bob["identity"]["external_id"] == "bob"
    (viewed,) = out[3]
    assert viewed == alice
    alice_id = alice["identity"]["onesignal_id"]
    subscription_id = alice["subscriptions"][0]["id"]
    updated, aliases = out[4]
    assert updated["properties"]["tags"] == {}  # the empty value deleted "plan"
    assert updated["properties"]["purchases"][0]["sku"] == "gold"
    assert aliases["identity"]["crm"] == "42"
    (moved,) = out[5]
    assert moved["identity"] == bob["identity"]

    timeline, owner_then, alice_then, events, mau = out[6]
    intervals = timeline["intervals"]
    assert [(i["owner_id"], i["cause"]) for i in intervals] == [
        (alice_id, "api"),
        (bob["identity"]["onesignal_id"], "transfer"),
    ]
    assert owner_then["owner_id"] == alice_id
    assert alice_then["status"] == "live"
    assert alice_then["subscription_ids"] == [subscription_id]  # before the move
    assert alice_then["identity"]["crm"] == "42"
    types = [event["type"].split(":")[1] for event in events["events"]]
    assert types[0] == "Created"
    assert {"ExternalIdSet", "PurchaseRecorded", "AliasAdded", "SubscriptionDetached"} <= set(types)
    today = mau["days"][-1]
    assert today["total"] == 1  # alice's session on her iPhone
    assert today["by_type"] == {"iOSPush": 1}
