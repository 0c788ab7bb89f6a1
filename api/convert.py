"""Domain objects to OneSignal-shaped bodies (no nulls, integer times), and back."""

from __future__ import annotations

from datetime import UTC, datetime

from idledger.api.schemas import (
    PropertiesIn,
    PropertiesOut,
    PurchaseIn,
    PurchaseOut,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    UserOut,
)
from idledger.domain.subscription import Subscription
from idledger.domain.user import User
from idledger.domain.values import (
    DeviceInfo,
    Purchase,
    SubscriptionSpec,
    SubscriptionUpdate,
    UserProperties,
    epoch,
)

DEVICE_FIELDS = ("sdk", "device_model", "device_os", "rooted", "test_type", "app_version",
                 "net_type", "carrier")  # fmt: skip


def identity_of(user: User) -> dict[str, str]:
    identity = {**user.aliases, "onesignal_id": str(user.id)}
    if user.external_id is not None:
        identity["external_id"] = user.external_id
    return identity


def properties_of(user: User) -> PropertiesOut:
    given = user.properties
    return PropertiesOut(
        tags=dict(user.tags),
        language=given.language,
        timezone_id=given.timezone_id,
        lat=given.lat,
        long=given.long,
        country=given.country,
        first_active=epoch(given.first_active) if given.first_active else None,
        last_active=epoch(given.last_active) if given.last_active else None,
        ip=given.ip,
        purchases=[
            PurchaseOut(sku=p.sku, amount=str(p.amount), iso=p.iso, count=p.count)
            for p in user.purchases
        ]
        or None,
    )


def subscription_out(subscription: Subscription) -> SubscriptionOut:
    device = subscription.device
    return SubscriptionOut(
        id=str(subscription.id),
        type=subscription.type,
        token=subscription.token,
        enabled=subscription.enabled,
        notification_types=subscription.notification_types,
        session_time=subscription.session_time,
        session_count=subscription.session_count,
        web_auth=subscription.web_auth,
        web_p256=subscription.web_p256,
        **{name: getattr(device, name) for name in DEVICE_FIELDS},
    )


def user_out(user: User, subscriptions: list[Subscription]) -> UserOut:
    return UserOut(
        identity=identity_of(user),
        properties=properties_of(user),
        subscriptions=[subscription_out(s) for s in subscriptions],
    )


def properties_in(properties: PropertiesIn) -> UserProperties:
    """Raises pydantic's ValidationError with the field named, turned into a 400."""
    return UserProperties.model_validate(
        {
            "language": properties.language,
            "timezone_id": properties.timezone_id,
            "country": properties.country,
            "lat": properties.lat,
            "long": properties.long,
            "ip": properties.ip,
            "first_active": _moment(properties.first_active),
            "last_active": _moment(properties.last_active),
        }
    )


def purchase_in(purchase: PurchaseIn) -> Purchase:
    return Purchase.model_validate(purchase.model_dump())


def device_of(body: SubscriptionIn | SubscriptionPatch) -> DeviceInfo:
    return DeviceInfo.model_validate({name: getattr(body, name) for name in DEVICE_FIELDS})


def subscription_spec(body: SubscriptionIn) -> SubscriptionSpec:
    return SubscriptionSpec(
        type=body.type,
        token=body.token,
        enabled=True if body.enabled is None else body.enabled,
        notification_types=body.notification_types,
        web_auth=body.web_auth,
        web_p256=body.web_p256,
        device=device_of(body),
    )


def subscription_update(body: SubscriptionPatch) -> SubscriptionUpdate:
    return SubscriptionUpdate(
        token=body.token,
        enabled=body.enabled,
        notification_types=body.notification_types,
        web_auth=body.web_auth,
        web_p256=body.web_p256,
        device=device_of(body),
    )


def _moment(seconds: int | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None
