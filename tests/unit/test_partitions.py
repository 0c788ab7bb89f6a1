"""The partition map read from the settings: where partitions live, where a new
app goes, where an app is looked for, and clear refusals of a wrong map."""

from __future__ import annotations

from uuid import UUID

import pytest

from idledger.partitions import PartitionMap, derived_url, partition_suffix
from idledger.settings import Settings, SettingsError

PG = "postgresql://u:pw@db.example:5433/ledger"


def mapped(**settings: str) -> PartitionMap:
    return PartitionMap.of(Settings(**settings))  # type: ignore[arg-type]


def test_without_partitions_the_store_is_the_only_partition() -> None:
    only = mapped(store_url="sqlite:///var/a.db")

    assert only.urls == ("sqlite:///var/a.db",)
    assert only.for_new_app(UUID(int=7)) == 0
    assert only.search_order(UUID(int=7)) == [0]


def test_a_count_derives_partitions_beside_the_store() -> None:
    assert mapped(store_url="sqlite:///var/a.db", partitions="3").urls == (
        "sqlite:///var/a.db", "sqlite:///var/a.p1.db", "sqlite:///var/a.p2.db",
    )  # fmt: skip
    assert derived_url(f"{PG}?schema=tenants", 2) == f"{PG}?schema=tenants_p2"
    assert derived_url(PG, 1) == f"{PG}?schema=idledger_p1"


def test_a_list_names_the_stores_of_partitions_1_on() -> None:
    other = "postgresql://u@other.example/ledger?schema=s"
    assert mapped(store_url=PG, partitions=f" {other} ").urls == (PG, other)


def test_new_apps_hash_and_existing_apps_are_looked_for_hashed_partition_first() -> None:
    four = mapped(store_url="sqlite:///a.db", partitions="4")

    assert [four.for_new_app(UUID(int=n)) for n in range(6)] == [0, 1, 2, 3, 0, 1]
    assert four.search_order(UUID(int=6)) == [2, 0, 1, 3]


def test_a_pin_places_and_finds_an_app() -> None:
    app = UUID(int=6)
    pinned = mapped(store_url="sqlite:///a.db", partitions="4", app_partitions=f"{app}=3")

    assert pinned.for_new_app(app) == 3
    assert pinned.search_order(app) == [3]


def test_standbys_follow_each_partition_into_its_schema() -> None:
    two = mapped(store_url=f"{PG}?schema=s", partitions="2", read_url="postgresql://u@standby:5432")
    settings = Settings(
        store_url=f"{PG}?schema=s", partitions="2", read_url="postgresql://u@standby:5432"
    )

    assert two.settings_of(settings, 1).read_url == "postgresql://u@standby:5432?schema=s_p1"
    assert two.settings_of(settings, 0).read_url == "postgresql://u@standby:5432"
    elsewhere = Settings(
        store_url=PG, partitions="postgresql://u@other/ledger", read_url="postgresql://u@standby"
    )
    assert PartitionMap.of(elsewhere).settings_of(elsewhere, 1).read_url == ""


@pytest.mark.parametrize(
    ("partitions", "app_partitions", "message"),
    [
        ("0", "", "IDLEDGER_PARTITIONS must be 1-256, not 0"),
        ("mysql://x", "", "IDLEDGER_PARTITIONS entry 1 is neither a count nor a store URL"),
        ("sqlite:///a.db", "", "names one store twice"),
        ("2", "not-an-id=1", "IDLEDGER_APP_PARTITIONS entry 1 is not <app id>=<partition number>"),
        ("2", f"{UUID(int=1)}=2", "names partition 2; there are 2 (0-1)"),
    ],
)
def test_a_wrong_map_is_refused_with_what_is_wrong(
    partitions: str, app_partitions: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mapped(store_url="sqlite:///a.db", partitions=partitions, app_partitions=app_partitions)


def test_read_models_of_partitions_are_told_apart_by_a_suffix() -> None:
    assert [partition_suffix(n) for n in range(3)] == ["", "@p1", "@p2"]
