"""Request and response bodies of the OneSignal-compatible User API (v1).

Field names and shapes follow OneSignal's; unknown keys are ignored, as
OneSignal ignores them. Responses never carry ``null``: unset fields are left
out, because the official clients reject nulls.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from idledger.domain.values import Int32, SubscriptionType, refuse_unstorable

MAX_TAGS = 100
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z, the last instant Python can hold


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        """Every string of a request body, keys included, must be storable on every
        store (the domain's text rules); the answer names the field. The outermost
        body runs this first, so the path is the full one."""
        refuse_unstorable(data, "")
        return data


Identity = Annotated[dict[str, Annotated[str, Field(max_length=128)]], Field(max_length=22)]


class PurchaseIn(Body):
    sku: Annotated[str, Field(min_length=1, max_length=128)]
    amount: Annotated[str, Field(pattern=r"^\d{1,10}(\.\d{1,4})?$")]
    iso: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    count: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class PropertiesIn(Body):
    tags: dict[str, str | int | float | bool] | None = Field(default=None, max_length=MAX_TAGS)
    language: str | None = None
    timezone_id: str | None = None
    lat: float | None = None
    long: float | None = None
    country: str | None = None
    first_active: int | None = Field(default=None, ge=0, le=LAST_SECOND)
    last_active: int | None = Field(default=None, ge=0, le=LAST_SECOND)
    ip: str | None = None
    purchases: list[PurchaseIn] | None = Field(default=None, max_length=100)

    @field_validator("tags")
    @classmethod
    def _tag_values_as_strings(
        cls, tags: dict[str, str | int | float | bool] | None
    ) -> dict[str, str | int | float | bool] | None:
        # OneSignal stores tag values as strings; booleans and numbers are stringified.
        if tags is None:
            return None
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in tags.items()}


class SubscriptionPatch(Body):
    """update_subscription: every field optional, the type cannot change."""

    token: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    enabled: StrictBool | None = None
    notification_types: Int32 | None = None
    sdk: Annotated[str, Field(max_length=100)] | None = None
    device_model: Annotated[str, Field(max_length=100)] | None = None
    device_os: Annotated[str, Field(max_length=100)] | None = None
    rooted: StrictBool | None = None
    test_type: Int32 | None = None
    app_version: Annotated[str, Field(max_length=100)] | None = None
    net_type: Int32 | None = None
    carrier: Annotated[str, Field(max_length=100)] | None = None
    web_auth: Annotated[str, Field(max_length=256)] | None = None
    web_p256: Annotated[str, Field(max_length=256)] | None = None


class SubscriptionIn(SubscriptionPatch):
    """A new subscription: its type is required; session counters are OneSignal's
    to report and are not taken from clients."""

    type: SubscriptionType
    session_time: int | None = None
    session_count: int | None = None


class UserIn(Body):
    identity: Identity | None = None
    properties: PropertiesIn | None = None
    subscriptions: list[SubscriptionIn] | None = Field(default=None, max_length=20)


class Deltas(Body):
    session_time: int | None = Field(default=None, ge=0, le=86_400)
    session_count: int | None = Field(default=None, ge=0, le=100)
    purchases: list[PurchaseIn] | None = Field(default=None, max_length=100)


class UpdateUserIn(Body):
    properties: PropertiesIn | None = None
    refresh_device_metadata: bool | None = None
    deltas: Deltas | None = None


class SubscriptionBody(Body):
    subscription: SubscriptionIn


class SubscriptionPatchBody(Body):
    subscription: SubscriptionPatch


class IdentityBody(Body):
    identity: Identity


class TransferIn(Body):
    identity: Annotated[Identity, Field(min_length=1, max_length=1)]


class AppIn(Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]


class ErrorItem(BaseModel):
    code: str
    title: str
    field: str | None = None
    meta: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """OneSignal's error shape: a list of errors, each with a code and a title."""

    errors: list[ErrorItem]


class PurchaseOut(BaseModel):
    sku: str
    amount: str
    iso: str
    count: int


class PropertiesOut(BaseModel):
    tags: dict[str, str] = {}
    language: str | None = None
    timezone_id: str | None = None
    lat: float | None = None
    long: float | None = None
    country: str | None = None
    first_active: int | None = None
    last_active: int | None = None
    ip: str | None = None
    purchases: list[PurchaseOut] | None = None


class SubscriptionOut(BaseModel):
    id: str
    type: SubscriptionType
    token: str | None = None
    enabled: bool | None = None
    notification_types: Int32 | None = None
    session_time: int | None = None
    session_count: int | None = None
    sdk: str | None = None
    device_model: str | None = None
    device_os: str | None = None
    rooted: bool | None = None
    test_type: Int32 | None = None
    app_version: str | None = None
    net_type: Int32 | None = None
    carrier: str | None = None
    web_auth: str | None = None
    web_p256: str | None = None


class UserOut(BaseModel):
    identity: dict[str, str]
    properties: PropertiesOut
    subscriptions: list[SubscriptionOut]


class IdentityOut(BaseModel):
    identity: dict[str, str]


class PropertiesBodyOut(BaseModel):
    properties: PropertiesOut


class SubscriptionBodyOut(BaseModel):
    subscription: SubscriptionOut


class AppOut(BaseModel):
    id: str
    name: str
    created_at: str
    updated_at: str
    players: int = 0
    messageable_players: int = 0
    basic_auth_key: str | None = None
