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
from typing import Annotated, Any
from zoneinfo import available_timezones

from pydantic import AfterValidator, AwareDatetime, Field, field_validator

from idledger.domain.base import Value
from idledger.domain.errors import InvalidValue


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


# One rule set for text, used by every entry point (HTTP bodies and paths, the
# importers, the domain's own checks): whatever is accepted must be storable and
# projectable on SQLite and PostgreSQL alike. PostgreSQL text cannot hold NUL, and
# an unpaired UTF-16 surrogate is not Unicode (no UTF-8 encoder writes it). Ids,
# labels, tokens and tag keys hold no control character at all; free text (tag
# values, device descriptions) may hold tab, line feed and carriage return.
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL_IN_ID = re.compile("[\x00-\x1f\x7f]")
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text_problem(value: str, *, identifier: bool = False) -> str | None:
    """Why ``value`` cannot be stored, or ``None`` when it can."""
    if _SURROGATE.search(value):
        return "holds an unpaired UTF-16 surrogate, which is not Unicode text"
    found = (_CONTROL_IN_ID if identifier else _CONTROL_IN_TEXT).search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "holds a NUL character (U+0000), which the store cannot hold"
    return f"holds the control character U+{ord(found.group()):04X}, which is not allowed here"


def refuse_unstorable(data: Any, path: str) -> None:
    """Refuse the first unstorable string in a JSON value (keys included), naming
    its path: request bodies and imported payloads."""
    if isinstance(data, str):
        if (problem := text_problem(data)) is not None:
            raise InvalidValue(path or "body", problem)
    elif isinstance(data, dict):
        for key, value in data.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                raise InvalidValue(path or "body", f"a key {problem}")
            refuse_unstorable(value, inner)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            refuse_unstorable(value, f"{path}.{index}" if path else str(index))


def check_text(field: str, value: str, *, identifier: bool = False) -> str:
    problem = text_problem(value, identifier=identifier)
    if problem is not None:
        raise InvalidValue(field, problem)
    return value


def check_external_id(external_id: str) -> str:
    check_text("external_id", external_id, identifier=True)
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
    check_text(f"identity.{label}", alias_id, identifier=True)
    if not alias_id.strip():
        raise InvalidValue(f"identity.{label}", "must not be empty or blank")
    if len(alias_id) > MAX_ID_LENGTH:
        raise InvalidValue(f"identity.{label}", f"must be at most {MAX_ID_LENGTH} characters")


def check_tag(key: str, value: str) -> None:
    check_text("tags", key, identifier=True)
    check_text(f"tags.{key}", value)
    if not key.strip() or len(key) > MAX_TAG_KEY_LENGTH:
        raise InvalidValue("tags", f"key must be 1-{MAX_TAG_KEY_LENGTH} characters")
    if key in RESERVED_TAG_KEYS:
        raise InvalidValue(f"tags.{key}", "is a reserved tag key")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise InvalidValue(f"tags.{key}", f"must be at most {MAX_TAG_VALUE_LENGTH} characters")


def _storable_identifier(value: str) -> str:
    problem = text_problem(value, identifier=True)
    if problem is not None:
        raise ValueError(problem)
    return value


def _storable_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Strings of the value objects below, checked by the same rules as ids and tags.
IdText = Annotated[str, AfterValidator(_storable_identifier)]
FreeText = Annotated[str, AfterValidator(_storable_text)]

_TIMEZONES = frozenset(available_timezones())


class UserProperties(Value):
    """Profile properties; ``None`` means "not given" (an update leaves it alone)."""

    language: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")] | None = None
    timezone_id: str | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    long: Annotated[float, Field(ge=-180, le=180)] | None = None
    ip: Annotated[IdText, Field(max_length=45)] | None = None
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
    sku: Annotated[FreeText, Field(min_length=1, max_length=128)]
    amount: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]
    iso: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    count: Annotated[int, Field(ge=1, le=1_000_000)] = 1


class DeviceInfo(Value):
    """What a device reports about itself; ``None`` means "not reported"."""

    device_model: Annotated[FreeText, Field(max_length=100)] | None = None
    device_os: Annotated[FreeText, Field(max_length=100)] | None = None
    app_version: Annotated[FreeText, Field(max_length=100)] | None = None
    sdk: Annotated[FreeText, Field(max_length=100)] | None = None
    language: Annotated[FreeText, Field(max_length=35)] | None = None
    timezone_id: Annotated[FreeText, Field(max_length=64)] | None = None
    installation_id: Annotated[FreeText, Field(max_length=128)] | None = None
    carrier: Annotated[FreeText, Field(max_length=100)] | None = None
    rooted: bool | None = None
    net_type: Int32 | None = None
    test_type: Int32 | None = None

    def merged(self, update: DeviceInfo) -> DeviceInfo:
        return self.model_copy(update={k: v for k, v in update if v is not None})


class SubscriptionSpec(Value):
    """A subscription as a caller describes it (create or update)."""

    type: SubscriptionType
    token: Annotated[IdText, Field(min_length=1, max_length=1024)] | None = None
    enabled: bool = True
    notification_types: Int32 | None = None
    web_auth: Annotated[IdText, Field(max_length=256)] | None = None
    web_p256: Annotated[IdText, Field(max_length=256)] | None = None
    device: DeviceInfo = DeviceInfo()


class SubscriptionUpdate(Value):
    token: Annotated[IdText, Field(min_length=1, max_length=1024)] | None = None
    enabled: bool | None = None
    notification_types: Int32 | None = None
    web_auth: Annotated[IdText, Field(max_length=256)] | None = None
    web_p256: Annotated[IdText, Field(max_length=256)] | None = None
    device: DeviceInfo = DeviceInfo()


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())
