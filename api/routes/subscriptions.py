"""OneSignal User API: subscriptions, their owner, and identity by subscription."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from idledger.api import examples as ex
from idledger.api.convert import subscription_out, subscription_spec, subscription_update
from idledger.api.deps import AppId, ReaderDep, RuntimeDep
from idledger.api.lookup import identity_body, subscription_uuid, user_id_for
from idledger.api.openapi_docs import errors, merge
from idledger.api.routes.common import BODY, COMMAND, KEYED, PATH, identity_change
from idledger.api.schemas import (
    IdentityBody,
    IdentityOut,
    SubscriptionBody,
    SubscriptionBodyOut,
    SubscriptionPatchBody,
    TransferIn,
)
from idledger.domain.errors import SubscriptionNotFound
from idledger.domain.ledger import ProfileChange
from idledger.domain.values import OwnershipCause

router = APIRouter(prefix="/apps/{app_id}", tags=["subscriptions"])
STATUS = {"created": 201, "moved": 202, "unchanged": 200}


@router.post(
    "/users/by/{alias_label}/{alias_id}/subscriptions",
    status_code=201,
    response_model=SubscriptionBodyOut,
    response_model_exclude_none=True,
    responses=merge(
        {
            201: ex.SUBSCRIPTION_CREATED,
            200: {"model": SubscriptionBodyOut, **ex.SUBSCRIPTION_UNCHANGED},
            202: {"model": SubscriptionBodyOut, **ex.SUBSCRIPTION_MOVED},
        },
        errors(*KEYED, *PATH, *BODY, *COMMAND, ex.USER_NOT_FOUND),
    ),
    openapi_extra=ex.CREATE_SUBSCRIPTION,
)
def create_subscription(
    alias_label: str,
    alias_id: str,
    body: SubscriptionBody,
    app_id: AppId,
    runtime: RuntimeDep,
    response: Response,
) -> SubscriptionBodyOut:
    """201 new, 202 moved from another user (same type and token), 200 already here.
    A user keeps at most 20: a 21st succeeds as usual and the least recently active
    one moves to a new anonymous user (ownership cause ``evicted``), keeping at least
    3 email and 3 SMS subscriptions, as OneSignal does."""
    user_id = user_id_for(runtime, app_id, alias_label, alias_id)
    outcome = runtime.ledger.create_subscription(
        app_id, user_id, subscription_spec(body.subscription)
    )
    runtime.written(outcome.position)
    response.status_code = STATUS[outcome.status]
    subscription = runtime.models.profiles.subscription(app_id, outcome.subscription_id)
    if subscription is None:
        raise SubscriptionNotFound(outcome.subscription_id)
    return SubscriptionBodyOut(subscription=subscription_out(subscription))


@router.patch(
    "/subscriptions/{subscription_id}",
    response_model=dict[str, Any],
    responses=merge(
        {200: ex.DELETED | {"description": "Updated"}},
        errors(*KEYED, *PATH, *BODY, *COMMAND, ex.SUBSCRIPTION_NOT_FOUND),
    ),
    openapi_extra=ex.UPDATE_SUBSCRIPTION,
)
def update_subscription(
    subscription_id: str, body: SubscriptionPatchBody, app_id: AppId, runtime: RuntimeDep
) -> dict[str, Any]:
    outcome = runtime.ledger.update_subscription(
        app_id, subscription_uuid(subscription_id), subscription_update(body.subscription)
    )
    runtime.written(outcome.position)
    return {}


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=202,
    response_model=dict[str, Any],
    responses=merge(
        {202: ex.DELETED | {"description": "Deleted"}},
        errors(*KEYED, *PATH, *COMMAND, ex.SUBSCRIPTION_NOT_FOUND),
    ),
)
def delete_subscription(subscription_id: str, app_id: AppId, runtime: RuntimeDep) -> dict[str, Any]:
    outcome = runtime.ledger.delete_subscription(app_id, subscription_uuid(subscription_id))
    runtime.written(outcome.position)
    return {}


@router.patch(
    "/subscriptions/{subscription_id}/owner",
    response_model=IdentityOut,
    responses=merge(
        {200: ex.NEW_OWNER},
        errors(*KEYED, *PATH, *BODY, *COMMAND, ex.SUBSCRIPTION_NOT_FOUND, ex.USER_NOT_FOUND),
    ),
    openapi_extra=ex.TRANSFER,
)
def transfer_subscription(
    subscription_id: str, body: TransferIn, app_id: AppId, runtime: RuntimeDep
) -> IdentityOut:
    """Move the subscription to the user named by one alias. From an anonymous user to
    an external_id, this is the SDK's login fallback and is recorded as a login."""
    ((label, alias_id),) = body.identity.items()
    target = user_id_for(runtime, app_id, label, alias_id)
    sid = subscription_uuid(subscription_id)
    current = runtime.ledger.read(app_id).subscription(sid)
    owner = runtime.ledger.read(app_id).user(current.owner_id) if current.owner_id else None
    login = label == "external_id" and owner is not None and owner.is_anonymous
    cause = OwnershipCause.LOGIN if login else OwnershipCause.TRANSFER
    outcome = runtime.ledger.transfer_subscription(app_id, sid, target, cause=cause)
    runtime.written(outcome.position)
    return identity_body(runtime, app_id, target)


@router.get(
    "/subscriptions/{subscription_id}/user/identity",
    response_model=IdentityOut,
    responses=merge({200: ex.IDENTITY}, errors(*KEYED, *PATH, ex.SUBSCRIPTION_NOT_FOUND)),
)
async def get_aliases_by_subscription(  # a read-model lookup: see users.get_user
    subscription_id: str, app_id: AppId, runtime: ReaderDep
) -> IdentityOut:
    subscription = runtime.models.profiles.subscription(app_id, subscription_uuid(subscription_id))
    if subscription is None or subscription.owner_id is None:
        raise SubscriptionNotFound(subscription_id)
    return identity_body(runtime, app_id, subscription.owner_id)


@router.patch(
    "/subscriptions/{subscription_id}/user/identity",
    response_model=IdentityOut,
    responses=merge(
        {200: ex.IDENTITY},
        errors(*KEYED, *PATH, *BODY, *COMMAND, ex.SUBSCRIPTION_NOT_FOUND, ex.ALIAS_CLAIMED),
    ),
    openapi_extra=ex.ALIASES,
)
def create_alias_by_subscription(
    subscription_id: str, body: IdentityBody, app_id: AppId, runtime: RuntimeDep
) -> IdentityOut:
    owner_id = runtime.ledger.read(app_id).subscription(subscription_uuid(subscription_id)).owner_id
    assert owner_id is not None
    external_id, aliases = identity_change(body.identity)
    outcome = runtime.ledger.update_user(
        app_id, owner_id, ProfileChange(external_id=external_id, aliases=aliases)
    )
    runtime.written(outcome.position)
    return identity_body(runtime, app_id, owner_id)
