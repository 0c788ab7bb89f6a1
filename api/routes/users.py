"""OneSignal User API: users and their identity (aliases)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response

from idledger.api import examples as ex
from idledger.api.convert import (
    identity_of,
    properties_in,
    properties_of,
    purchase_in,
    subscription_spec,
)
from idledger.api.deps import AppId, ReaderDep, RuntimeDep
from idledger.api.errors import ApiError
from idledger.api.lookup import (
    identity_body,
    live_user,
    profile_body,
    segment,
    user_body,
    user_for,
    user_id_for,
)
from idledger.api.openapi_docs import errors, merge
from idledger.api.routes.common import BODY, COMMAND, KEYED, PATH, identity_change
from idledger.api.runtime import Runtime
from idledger.api.schemas import (
    IdentityBody,
    IdentityOut,
    PropertiesBodyOut,
    PropertiesIn,
    UpdateUserIn,
    UserIn,
    UserOut,
)
from idledger.domain.claim import token_namespace
from idledger.domain.errors import AliasConflict, UserNotFound
from idledger.domain.ledger import ProfileChange
from idledger.domain.service import UserOutcome

router = APIRouter(prefix="/apps/{app_id}/users", tags=["users"])
BY_ALIAS = "/by/{alias_label}/{alias_id}"


def profile_change(body_identity: dict[str, str], properties: PropertiesIn | None) -> ProfileChange:
    external_id, aliases = identity_change(body_identity)
    properties = properties or PropertiesIn()
    return ProfileChange(
        external_id=external_id,
        aliases=aliases,
        tags={k: str(v) for k, v in (properties.tags or {}).items()},
        properties=properties_in(properties),
        purchases=tuple(purchase_in(p) for p in properties.purchases or ()),
    )


@router.post(
    "",
    status_code=201,
    response_model=UserOut,
    response_model_exclude_none=True,
    responses=merge(
        {201: ex.USER_CREATED, 200: {"model": UserOut, **ex.USER_EXISTING}},
        errors(*KEYED, *BODY, *COMMAND, ex.USER_NOT_FOUND, ex.ALIAS_CLAIMED),
    ),
    openapi_extra=ex.CREATE_USER,
)
def create_user(body: UserIn, app_id: AppId, runtime: RuntimeDep, response: Response) -> UserOut:
    """Create a user; an identity that already exists selects that user (200) and
    adds the subscriptions to it. Past 20 subscriptions the least recently active
    ones move to new anonymous users (ownership cause ``evicted``); at most 20 in
    one body (400)."""
    identity = dict(body.identity or {})
    specs = [subscription_spec(s) for s in body.subscriptions or ()]
    if not identity and not specs:
        raise ApiError(
            400, "invalid-value", "a user needs an identity or a subscription", "identity"
        )
    change = profile_change(
        {k: v for k, v in identity.items() if k != "onesignal_id"}, body.properties
    )
    # Resolve, then act. Another request may claim the identity in between (say 50
    # clients creating one external_id at once): the losing create is then an
    # AliasConflict, and resolving again finds the winner, which this body then
    # updates (200 with that user). Resolving again raises the 409 itself when the
    # identity names two users; a conflict it does not explain is raised as it is.
    existing = _existing_user(runtime, app_id, identity)
    for attempt in range(RESOLVE_ATTEMPTS):
        try:
            outcome = _create_or_update(runtime, app_id, identity, specs, change, existing)
            break
        except AliasConflict:
            again = _existing_user(runtime, app_id, identity)
            if again == existing or attempt == RESOLVE_ATTEMPTS - 1:
                raise
            existing = again
    if existing is not None:
        response.status_code = 200
    runtime.written(outcome.position)
    return user_body(runtime, app_id, outcome.user_id)


RESOLVE_ATTEMPTS = 3


def _create_or_update(
    runtime: Runtime,
    app_id: UUID,
    identity: dict[str, str],
    specs: list[Any],
    change: ProfileChange,
    existing: UUID | None,
) -> UserOutcome:
    if existing is not None:
        change = ProfileChange(**{**change.__dict__, "subscriptions": tuple(specs)})
        return runtime.ledger.update_user(app_id, existing, change)
    if (logged_out := _logout(runtime, app_id, identity, specs)) is not None:
        outcome = runtime.ledger.update_user(app_id, logged_out.user_id, change)
        return type(outcome)(outcome.position or logged_out.position, logged_out.user_id)
    return runtime.ledger.create_user(
        app_id, external_id=change.external_id, aliases=change.aliases, tags=change.tags,
        properties=change.properties, subscriptions=specs, purchases=change.purchases,
    )  # fmt: skip


def _existing_user(runtime: Runtime, app_id: UUID, identity: dict[str, str]) -> UUID | None:
    owners: dict[str, UUID] = {}
    for label, alias_id in identity.items():
        try:
            owners[label] = user_id_for(runtime, app_id, label, alias_id)
        except UserNotFound:
            if label == "onesignal_id":  # names a user that must exist
                raise
            continue
    if "onesignal_id" in owners:  # from the log, as the claims: never a stale 404
        runtime.ledger.read(app_id).user(owners["onesignal_id"])
    if len(set(owners.values())) > 1:
        raise AliasConflict({label: identity[label] for label in owners})
    return next(iter(owners.values()), None)


def _logout(runtime: Runtime, app_id: UUID, identity: dict[str, str], specs: list[Any]) -> Any:
    """OneSignal's SDKs log out by creating a user that carries the device's push
    subscription: record that as the domain's logout."""
    if identity or len(specs) != 1 or not specs[0].type.is_push or specs[0].token is None:
        return None
    view = runtime.ledger.read(app_id)
    subscription_id = view.holder(token_namespace(specs[0].type), specs[0].token)
    if subscription_id is None:
        return None
    outcome = runtime.ledger.logout(app_id, subscription_id)
    return outcome if outcome.created else None


# Lookups answered from the read models are short indexed reads: they run on the
# event loop (async def) rather than hopping to the thread pool and back, which
# cost more than the read itself. Folds from the log (history routes) stay sync.
@router.get(
    BY_ALIAS,
    response_model=UserOut,
    response_model_exclude_none=True,
    responses=merge({200: ex.USER_FOUND}, errors(*KEYED, *PATH, ex.USER_NOT_FOUND)),
)
async def get_user(alias_label: str, alias_id: str, app_id: AppId, runtime: ReaderDep) -> UserOut:
    return profile_body(
        runtime, app_id, segment(alias_label, "alias_label"), segment(alias_id, "alias_id")
    )


@router.patch(
    BY_ALIAS,
    status_code=202,
    response_model=PropertiesBodyOut,
    response_model_exclude_none=True,
    responses=merge(
        {202: ex.PROPERTIES_UPDATED}, errors(*KEYED, *PATH, *BODY, *COMMAND, ex.USER_NOT_FOUND)
    ),
    openapi_extra=ex.UPDATE_USER,
)
def update_user(
    alias_label: str, alias_id: str, body: UpdateUserIn, app_id: AppId, runtime: RuntimeDep
) -> PropertiesBodyOut:
    """Tags merge (an empty value deletes). ``deltas``: purchases are recorded;
    session_count / session_time are recorded as sessions of the user's current
    push subscription (the basis of MAU)."""
    user_id = user_id_for(runtime, app_id, alias_label, alias_id)
    change = profile_change({}, body.properties)
    if body.deltas:
        extra = tuple(purchase_in(p) for p in body.deltas.purchases or ())
        change = ProfileChange(
            **{
                **change.__dict__,
                "purchases": (*change.purchases, *extra),
                "sessions": body.deltas.session_count or 0,
                "session_time": body.deltas.session_time or 0,
            }
        )
    outcome = runtime.ledger.update_user(app_id, user_id, change)
    runtime.written(outcome.position)
    return PropertiesBodyOut(properties=properties_of(live_user(runtime, app_id, user_id)))


@router.delete(
    BY_ALIAS,
    response_model=dict[str, Any],
    responses=merge({200: ex.DELETED}, errors(*KEYED, *PATH, *COMMAND, ex.USER_NOT_FOUND)),
)
def delete_user(
    alias_label: str,
    alias_id: str,
    app_id: AppId,
    runtime: RuntimeDep,
    erase: Annotated[
        bool,
        Query(
            description="Also forget the person: destroy the data keys of the user and of "
            "its subscriptions, so its personal values become unreadable everywhere (the "
            "log, snapshots, exports, backups). By onesignal_id a deleted or merged-away "
            "user can be erased too; erasing again answers the same."
        ),
    ] = False,
) -> dict[str, Any]:
    if erase and segment(alias_label, "alias_label") == "onesignal_id":
        try:
            user_id = UUID(segment(alias_id, "alias_id"))
        except ValueError:
            raise UserNotFound(alias_id) from None
    else:
        user_id = user_id_for(runtime, app_id, alias_label, alias_id)
    if erase:
        runtime.written(runtime.ledger.erase_user(app_id, user_id).position)
    else:
        runtime.written(runtime.ledger.delete_user(app_id, user_id).position)
    return {}


@router.get(
    BY_ALIAS + "/identity",
    response_model=IdentityOut,
    responses=merge({200: ex.IDENTITY}, errors(*KEYED, *PATH, ex.USER_NOT_FOUND)),
)
async def get_aliases(
    alias_label: str, alias_id: str, app_id: AppId, runtime: ReaderDep
) -> IdentityOut:
    return IdentityOut(identity=identity_of(user_for(runtime, app_id, alias_label, alias_id)))


@router.patch(
    BY_ALIAS + "/identity",
    response_model=IdentityOut,
    responses=merge(
        {200: ex.IDENTITY},
        errors(*KEYED, *PATH, *BODY, *COMMAND, ex.USER_NOT_FOUND, ex.ALIAS_CLAIMED),
    ),
    openapi_extra=ex.ALIASES,
)
def create_alias(
    alias_label: str, alias_id: str, body: IdentityBody, app_id: AppId, runtime: RuntimeDep
) -> IdentityOut:
    """Upsert aliases; ``external_id`` here is how the SDKs log an anonymous user in."""
    user_id = user_id_for(runtime, app_id, alias_label, alias_id)
    external_id, aliases = identity_change(body.identity)
    outcome = runtime.ledger.update_user(
        app_id, user_id, ProfileChange(external_id=external_id, aliases=aliases)
    )
    runtime.written(outcome.position)
    return identity_body(runtime, app_id, user_id)


@router.delete(
    BY_ALIAS + "/identity/{alias_label_to_delete}",
    response_model=IdentityOut,
    responses=merge(
        {200: ex.IDENTITY},
        errors(*KEYED, *PATH, *COMMAND, ex.USER_NOT_FOUND, ex.ALIAS_NOT_FOUND),
    ),
)
def delete_alias(
    alias_label: str, alias_id: str, alias_label_to_delete: str, app_id: AppId, runtime: RuntimeDep
) -> IdentityOut:
    user_id = user_id_for(runtime, app_id, alias_label, alias_id)
    label = segment(alias_label_to_delete, "alias_label")
    if label == "onesignal_id":
        raise ApiError(400, "invalid-value", "onesignal_id cannot be deleted", "alias_label")
    if label == "external_id":
        outcome = runtime.ledger.remove_external_id(app_id, user_id)
    else:
        outcome = runtime.ledger.remove_alias(app_id, user_id, label)
    runtime.written(outcome.position)
    return identity_body(runtime, app_id, user_id)
