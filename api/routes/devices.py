"""Device association in the style of the Median (GoNative) app: after registering
for push, the app POSTs what its OneSignal bridge reports, with the app's own
user id; the push subscription is created or updated and logged in to that user.
Repeating the same POST changes nothing."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AppId, RuntimeDep
from api.routes.common import ERRORS
from api.schemas import Body
from domain.claim import token_namespace
from domain.values import (
    DeviceInfo,
    OwnershipCause,
    SubscriptionSpec,
    SubscriptionType,
    SubscriptionUpdate,
    check_external_id,
)

router = APIRouter(prefix="/apps/{app_id}/idledger", tags=["idledger"], responses=ERRORS)
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


@router.post("/devices", response_model=DeviceOut)
def associate_device(body: MedianDevice, app_id: AppId, runtime: RuntimeDep) -> DeviceOut:
    if body.user_id is not None:
        check_external_id(body.user_id)  # refuse before anything is written
    ledger = runtime.ledger
    kind = PLATFORMS[body.platform.lower()]
    token = body.one_signal_push_token
    existing = ledger.read(app_id).holder(token_namespace(kind), token)
    position: int | None
    if existing is None:
        spec = SubscriptionSpec(
            type=kind, token=token, enabled=body.one_signal_subscribed, device=_device(body)
        )
        created = ledger.create_user(app_id, subscriptions=[spec], cause=OwnershipCause.DEVICE)
        (subscription_id,) = ledger.read(app_id).user(created.user_id).subscriptions
        position = created.position
    else:
        subscription_id = existing
        change = SubscriptionUpdate(enabled=body.one_signal_subscribed, device=_device(body))
        position = ledger.update_subscription(app_id, subscription_id, change).position
    if body.user_id:
        position = ledger.login(app_id, subscription_id, body.user_id).position or position
    runtime.written(position)
    owner_id = ledger.read(app_id).subscription(subscription_id).owner_id
    assert owner_id is not None
    return DeviceOut(
        subscription_id=subscription_id,
        onesignal_id=owner_id,
        external_id=ledger.read(app_id).user(owner_id).external_id,
    )
