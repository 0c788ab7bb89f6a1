"""Value objects and the rules on single values (ids, aliases, tags).

Fields holding personal data are named for what they hold (``token`` of an email
subscription is the address, ``ip``, ``lat``/``long``) so that a later change can
encrypt exactly those fields per user.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import AwareDatetime, Field, field_validator

from domain.base import Value
from domain.errors import InvalidValue


class SubscriptionType(StrEnum):
    IOS_PUSH = "iOSPush"
    ANDROID_PUSH = "AndroidPush"
    HUAWEI_PUSH = "HuaweiPush"
    FIREOS_PUSH = "FireOSPush"
    WINDOWS_PUSH = "WindowsPush"
    MACOS_PUSH = "macOSPush"
    CHROME_PUSH = "ChromePush"
    CHROME_EXTENSION_PUSH = "ChromeExtensionPush"
    FIREFOX_PUSH = "FirefoxPush"
    SAFARI_PUSH = "SafariPush"
    SAFARI_LEGACY_PUSH = "SafariLegacyPush"
    EMAIL = "Email"
    SMS = "SMS"

    @property
    def is_push(self) -> bool:
        return self not in (SubscriptionType.EMAIL, SubscriptionType.SMS)

    @property
    def is_mobile_push(self) -> bool:
        """Counts towards monthly active users."""
        return self in MOBILE_PUSH_TYPES


MOBILE_PUSH_TYPES = frozenset(
    {
        SubscriptionType.IOS_PUSH,
        SubscriptionType.ANDROID_PUSH,
        SubscriptionType.HUAWEI_PUSH,
        SubscriptionType.FIREOS_PUSH,
    }
)


class OwnershipCause(StrEnum):
    """Why a subscription got its owner."""

    API = "api"  # created or moved by an explicit API call on a user
    DEVICE = "device"  # registered by a device flow (SDK, device association)
    LOGIN = "login"
    LOGOUT = "logout"
    TRANSFER = "transfer"
    MERGE = "merge"  # reserved for explicit user merges
    EVICTED = "evicted"  # pushed out by a 21st subscription
    IMPORT = "import"


class LimitPolicy(StrEnum):
    """What a full user (20 subscriptions) does with one more."""

    REFUSE = "refuse"  # explicit API create: a clear 409
    EVICT = "evict"  # device flows: the least recently active one moves out


MAX_SUBSCRIPTIONS_PER_USER = 20
MIN_KEPT_EMAIL = 3
MIN_KEPT_SMS = 3
MAX_CUSTOM_ALIASES = 20
MAX_ID_LENGTH = 128
# Integer codes from devices (notification types, network, test build): 32-bit as in
# OneSignal, and within what every JSON reader of the stored events reads exactly.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]

PLACEHOLDER_EXTERNAL_IDS = frozenset(
    value.casefold()
    for value in (
        "-1", "0", "1", "NA", "N/A", "NULL", "null", "none", "nil", "undefined",
        "UNQUALIFIED", "all", "unknown", "00000000-0000-0000-0000-000000000000",
    )
)  # fmt: skip

RESERVED_ALIAS_LABELS = frozenset({"onesignal_id", "external_id", "subscription_id"})
_ALIAS_LABEL = re.compile(r"[A-Za-z0-9_\-.]{1,64}")

RESERVED_TAG_KEYS = frozenset(
    {
        "message", "notification", "subscription", "user", "template", "app", "org",
        "dynamic_content", "data_feed", "journey", "custom_data",
    }
)  # fmt: skip
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 255


def check_external_id(external_id: str) -> str:
    if not external_id.strip():
        raise InvalidValue("external_id", "must not be empty or blank")
    if len(external_id) > MAX_ID_LENGTH:
        raise InvalidValue("external_id", f"must be at most {MAX_ID_LENGTH} characters")
    if external_id.strip().casefold() in PLACEHOLDER_EXTERNAL_IDS:
        raise InvalidValue("external_id", f"{external_id!r} is a placeholder, not an id")
    return external_id


def check_alias(label: str, alias_id: str) -> None:
    if label in RESERVED_ALIAS_LABELS:
        raise InvalidValue("alias_label", f"{label!r} is reserved")
    if not _ALIAS_LABEL.fullmatch(label):
        raise InvalidValue("alias_label", "must be 1-64 of letters, digits, '_', '-', '.'")
    if not alias_id.strip():
        raise InvalidValue(f"identity.{label}", "must not be empty or blank")
    if len(alias_id) > MAX_ID_LENGTH:
        raise InvalidValue(f"identity.{label}", f"must be at most {MAX_ID_LENGTH} characters")


def check_tag(key: str, value: str) -> None:
    if not key.strip() or len(key) > MAX_TAG_KEY_LENGTH:
        raise InvalidValue("tags", f"key must be 1-{MAX_TAG_KEY_LENGTH} characters")
    if key in RESERVED_TAG_KEYS:
        raise InvalidValue(f"tags.{key}", "is a reserved tag key")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise InvalidValue(f"tags.{key}", f"must be at most {MAX_TAG_VALUE_LENGTH} characters")


_TIMEZONES = frozenset(available_timezones())


class UserProperties(Value):
    """Profile properties; ``None`` means "not given" (an update leaves it alone)."""

    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")] | None = None
    timezone_id: str | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    long: Annotated[float, Field(ge=-180, le=180)] | None = None
    ip: Annotated[str, Field(max_length=45)] | None = None
    first_active: AwareDatetime | None = None
    last_active: AwareDatetime | None = None

    @field_validator("timezone_id")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is not None and value not in _TIMEZONES:
            raise ValueError(f"unknown IANA time zone {value!r}")
        return value

    def given(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Purchase(Value):
    sku: Annotated[str, Field(min_length=1, max_length=128)]
    amount: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
    iso: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    count: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class DeviceInfo(Value):
    """What a device reports about itself; ``None`` means "not reported"."""

    device_model: Annotated[str, Field(max_length=100)] | None = None
    device_os: Annotated[str, Field(max_length=100)] | None = None
    app_version: Annotated[str, Field(max_length=100)] | None = None
    sdk: Annotated[str, Field(max_length=100)] | None = None
    language: Annotated[str, Field(max_length=35)] | None = None
    timezone_id: Annotated[str, Field(max_length=64)] | None = None
    installation_id: Annotated[str, Field(max_length=128)] | None = None
    carrier: Annotated[str, Field(max_length=100)] | None = None
    rooted: bool | None = None
    net_type: Int32 | None = None
    test_type: Int32 | None = None

    def merged(self, update: DeviceInfo) -> DeviceInfo:
        return self.model_copy(update={k: v for k, v in update if v is not None})


class SubscriptionSpec(Value):
    """A subscription as a caller describes it (create or update)."""

    type: SubscriptionType
    token: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    enabled: bool = True
    notification_types: Int32 | None = None
    web_auth: Annotated[str, Field(max_length=256)] | None = None
    web_p256: Annotated[str, Field(max_length=256)] | None = None
    device: DeviceInfo = DeviceInfo()


class SubscriptionUpdate(Value):
    token: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    enabled: bool | None = None
    notification_types: Int32 | None = None
    web_auth: Annotated[str, Field(max_length=256)] | None = None
    web_p256: Annotated[str, Field(max_length=256)] | None = None
    device: DeviceInfo = DeviceInfo()


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())
