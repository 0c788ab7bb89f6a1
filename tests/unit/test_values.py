"""Rules on single values, without any store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from idledger.domain.errors import InvalidValue
from idledger.domain.values import (
    PLACEHOLDER_EXTERNAL_IDS,
    Purchase,
    SubscriptionType,
    UserProperties,
    check_alias,
    check_external_id,
    check_tag,
)


@pytest.mark.parametrize("value", ["-1", "0", "1", "NA", "NULL", "null", "UNQUALIFIED", " na "])
def test_placeholder_external_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidValue, match="placeholder"):
        check_external_id(value)


@pytest.mark.parametrize("value", ["alice", "10", "user-1", "NAB", "00000000-0000-0000-0000-1"])
def test_real_external_ids_pass(value: str) -> None:
    assert check_external_id(value) == value
    assert value.casefold() not in PLACEHOLDER_EXTERNAL_IDS


def test_over_long_values_are_refused() -> None:
    with pytest.raises(InvalidValue):
        check_external_id("x" * 129)
    with pytest.raises(InvalidValue):
        check_alias("crm", "x" * 129)
    with pytest.raises(InvalidValue):
        check_tag("k", "v" * 256)


def test_reserved_tag_keys_are_refused() -> None:
    with pytest.raises(InvalidValue, match="reserved"):
        check_tag("template", "x")
    check_tag("favourite_template", "x")


def test_mobile_push_is_what_counts_for_mau() -> None:
    mobile = {t for t in SubscriptionType if t.is_mobile_push}
    assert mobile == {
        SubscriptionType.IOS_PUSH, SubscriptionType.ANDROID_PUSH,
        SubscriptionType.HUAWEI_PUSH, SubscriptionType.FIREOS_PUSH,
    }  # fmt: skip
    assert not SubscriptionType.EMAIL.is_push
    assert SubscriptionType.CHROME_PUSH.is_push


@pytest.mark.parametrize(
    "fields",
    [{"timezone_id": "Mars/Olympus"}, {"country": "France"}, {"lat": 91}, {"language": "EN"}],
)
def test_bad_properties_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UserProperties.model_validate(fields)


def test_purchases_need_sku_amount_and_currency() -> None:
    with pytest.raises(ValidationError):
        Purchase.model_validate({"sku": "", "amount": "1.00", "iso": "USD"})
    with pytest.raises(ValidationError):
        Purchase.model_validate({"sku": "a", "amount": "-1", "iso": "USD"})
    assert Purchase.model_validate({"sku": "a", "amount": "1.99", "iso": "EUR"}).count == 1
