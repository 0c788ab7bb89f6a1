"""Device association in the style of the Median (GoNative) app: after registering
for push, the app POSTs what its OneSignal bridge reports, with the app's own
user id; the push subscription is created or updated and logged in to that user.
Repeating the same POST changes nothing."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from idledger.api import examples as ex
from idledger.api.deps import AppId, RuntimeDep
from idledger.api.openapi_docs import errors, merge
from idledger.api.routes.common import BODY, COMMAND, KEYED
from idledger.api.runtime import Runtime
from idledger.api.schemas import Body
from idledger.domain.claim import EXTERNAL_ID_NAMESPACE, token_namespace
from idledger.domain.errors import AliasConflict
from idledger.domain.values import (
    DeviceInfo,
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
    SubscriptionUpdate,
    check_external_id,
)

router = APIRouter(prefix="/apps/{app_id}/idledger", tags=["idledger"])
Short = Annotated[str, Field(max_length=200)]
PLATFORMS = {
    "ios": SubscriptionType.IOS_PUSH,
    "android": SubscriptionType.ANDROID_PUSH,
    "huawei": SubscriptionType.HUAWEI_PUSH,
    "fireos": SubscriptionType.FIREOS_PUSH,
}


class MedianDevice(Body):
    """What `median_onesignal_info()` gives, plus the app's own user id."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    user_id: Annotated[str | None, Field(max_length=128)] = None
    one_signal_user_id: Short | None = Field(default=None, alias="oneSignalUserId")
    one_signal_push_token: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        alias="oneSignalPushToken"
    )
    one_signal_subscribed: bool = Field(default=True, alias="oneSignalSubscribed")
    platform: Annotated[str, Field(pattern=r"^(?i:ios|android|huawei|fireos)$")]
    app_version: Short | None = Field(default=None, alias="appVersion")
    installation_id: Short | None = Field(default=None, alias="installationId")
    language: Short | None = None
    model: Short | None = None
    os: Short | None = None
    os_version: Short | None = Field(default=None, alias="osVersion")
    time_zone: Short | None = Field(default=None, alias="timeZone")


class DeviceOut(BaseModel):
    subscription_id: UUID
    onesignal_id: UUID
    external_id: str | None


def _device(body: MedianDevice) -> DeviceInfo:
    device_os = " ".join(part for part in (body.os, body.os_version) if part) or None
    return DeviceInfo(
        device_model=body.model, device_os=device_os, app_version=body.app_version,
        language=body.language, timezone_id=body.time_zone, installation_id=body.installation_id,
    )  # fmt: skip


@router.post(
    "/devices",
    response_model=DeviceOut,
    responses=merge({200: ex.DEVICE_ASSOCIATED}, errors(*KEYED, *BODY, *COMMAND, ex.ALIAS_CLAIMED)),
    openapi_extra=ex.DEVICE,
)
def associate_device(body: MedianDevice, app_id: AppId, runtime: RuntimeDep) -> DeviceOut:
    if body.user_id is not None:
        check_external_id(body.user_id)  # refuse before anything is written
    ledger = runtime.ledger
    kind = PLATFORMS[body.platform.lower()]
    token = body.one_signal_push_token
    spec = SubscriptionSpec(
        type=kind, token=token, enabled=body.one_signal_subscribed, device=_device(body)
    )
    for attempt in range(RESOLVE_ATTEMPTS):
        try:
            subscription_id, position = _associate(runtime, app_id, body, spec)
            break
        except AliasConflict:
            # Repeats racing: another one created the user_id's user meanwhile, with
            # this token. Resolving again finds both and changes nothing.
            if attempt == RESOLVE_ATTEMPTS - 1:
                raise
    runtime.written(position)
    owner_id = ledger.read(app_id).subscription(subscription_id).owner_id
    assert owner_id is not None
    return DeviceOut(
        subscription_id=subscription_id,
        onesignal_id=owner_id,
        external_id=ledger.read(app_id).user(owner_id).external_id,
    )


RESOLVE_ATTEMPTS = 3


def _associate(
    runtime: Runtime, app_id: UUID, body: MedianDevice, spec: SubscriptionSpec
) -> tuple[UUID, int | None]:
    """Resolve the token (and the user_id), then act; returns the subscription and
    the last position written.

    Each step is one command that, re-run by the ledger after losing a race, finds
    what the winner wrote and changes nothing. A new token is therefore created
    together with its user_id's user (a new one identified at once, or the one that
    already holds user_id) rather than on an anonymous user logged in afterwards: a
    repeat that lost the race for the token would move it to another anonymous user."""
    ledger = runtime.ledger
    view = ledger.read(app_id)
    existing = view.holder(token_namespace(spec.type), spec.token or "")
    if existing is not None:
        change = SubscriptionUpdate(enabled=spec.enabled, device=spec.device)
        position = ledger.update_subscription(app_id, existing, change).position
        if body.user_id:
            position = ledger.login(app_id, existing, body.user_id).position or position
        return existing, position
    holder = view.holder(EXTERNAL_ID_NAMESPACE, body.user_id) if body.user_id else None
    if holder is not None:
        added = ledger.create_subscription(app_id, holder, spec, cause=OwnershipCause.DEVICE)
        return added.subscription_id, added.position
    created = ledger.create_user(
        app_id, external_id=body.user_id or None, subscriptions=[spec], cause=OwnershipCause.DEVICE
    )
    (subscription_id,) = ledger.read(app_id).user(created.user_id).subscriptions
    return subscription_id, created.position
