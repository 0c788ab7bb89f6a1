"""`idledger apps create|show|rotate-key`: the operator's side of `POST /apps`,
`GET /apps/{id}` and `POST /apps/{id}/api_key`, with no server and no organization
key (whoever can open the store is the operator).

A REST API key is a secret: it is printed once, when it is made (the store keeps
only its hash); `show` never prints one."""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID, uuid4

import typer

from idledger.domain.app import App
from idledger.domain.values import check_text
from idledger.replay.partitions_cli import app_store_url, new_app_store_url
from idledger.replay.verb_support import (
    StoreUrl,
    Verbs,
    open_store_ledger,
    say,
    say_aside,
    tsv_field,
)

apps = typer.Typer(cls=Verbs, help="Apps (tenants): create one, show one, rotate its REST API key.")
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object, as the HTTP API answers.")]
AppId = Annotated[UUID, typer.Argument(help="The app's id.")]
KEY_ONCE = (
    "the REST API key is shown only now (the store keeps only its hash): clients send it "
    "as `Authorization: Key <key>`"
)


@apps.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="The app's name (1-200 characters).")],
    as_json: AsJson = False,
    store_url: StoreUrl = None,
) -> None:
    """Create an app (in a new store if there is none yet) and print its id and its
    REST API key, once."""
    check_text("name", name)
    app_id = uuid4()  # first: it chooses the app's partition
    ledger = open_store_ledger(new_app_store_url(store_url, app_id), create=True)
    try:
        created = ledger.create_app(name, app_id)
        _print(ledger.get_app(created.app_id), created.api_key, as_json)
    finally:
        ledger.close()
    say_aside(KEY_ONCE)


@apps.command("show")
def show_command(app_id: AppId, as_json: AsJson = False, store_url: StoreUrl = None) -> None:
    """Print an app's id, name and times (never its key)."""
    ledger = open_store_ledger(app_store_url(store_url, app_id))
    try:
        _print(ledger.get_app(app_id), None, as_json)
    finally:
        ledger.close()


@apps.command("rotate-key")
def rotate_key_command(app_id: AppId, as_json: AsJson = False, store_url: StoreUrl = None) -> None:
    """Give an app a new REST API key and print it, once. The previous key is refused
    from then on (a running server sees the change within a second)."""
    ledger = open_store_ledger(app_store_url(store_url, app_id))
    try:
        rotated = ledger.rotate_api_key(app_id)
        _print(ledger.get_app(rotated.app_id), rotated.api_key, as_json)
    finally:
        ledger.close()
    say_aside(KEY_ONCE)


def _print(app: App, api_key: str | None, as_json: bool) -> None:
    """The fields of the HTTP API's answer (``basic_auth_key`` only when a key is new)."""
    fields = {
        "id": str(app.id),
        "name": app.name,
        "created_at": app.created_on.isoformat(),
        "updated_at": app.modified_on.isoformat(),
    }
    if api_key is not None:
        fields["basic_auth_key"] = api_key
    if as_json:
        say(json.dumps(fields, ensure_ascii=False))
        return
    for field, value in fields.items():
        say(f"{field}\t{tsv_field(value)}")
