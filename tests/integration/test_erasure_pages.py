"""An erasure folds the same on every page size. ``erase_user`` writes the user's
``Erased`` event before the ``Deleted`` events of the subscriptions it held, in
one transaction; a page that ends between them must not leave those later events
without a row to fold onto (dead-lettered and held, on some page sizes only)."""

from __future__ import annotations

from idledger.domain.ledger import Ledger
from idledger.projections.engine import READ_MODELS
from idledger.projections.service import ReadModels
from idledger.replay.rebuild import rebuild, swap_in, verify
from tests.helpers import caught_up, device_user, email, ios, sms

PERSONAL = ("push-token-1", "someone@example.org", "+33612345678", "someone-77")


def test_an_erasure_split_across_pages_is_folded_as_in_one_page(
    ledger: Ledger, store: dict[str, str]
) -> None:
    app_id = ledger.create_app("erasure-pages").app_id
    specs = [ios(PERSONAL[0]), email(PERSONAL[1]), sms(PERSONAL[2])]
    user_id = ledger.create_user(app_id, external_id=PERSONAL[3], subscriptions=specs).user_id
    kept_user, kept_subscription = device_user(ledger, app_id, ios("other-token"))
    held = sorted(ledger.read(app_id).user(user_id).subscriptions, key=str)
    models = ReadModels(store, page_size=1)  # a page boundary between every two events
    try:
        caught_up(models)  # the subscriptions have rows from earlier pages
        erasure = ledger.erase_user(app_id, user_id)
        assert sorted(erasure.subscriptions, key=str) == held
        caught_up(models)

        for name in READ_MODELS:
            assert models.followers[name].view.dead_letters() == [], name
        profiles = models.profiles
        assert profiles.user(app_id, user_id) is None
        assert profiles.merged_into(user_id) is None
        assert all(profiles.subscription(app_id, s) is None for s in held)
        assert profiles.subscriptions_of(app_id, kept_user)[0].id == kept_subscription
        live = profiles.dump()
        assert not any(value in repr(live) for value in PERSONAL)
        forgotten = {str(user_id), *map(str, held)}
        assert {row[0] for row in live["profile_erased"]} == forgotten  # ids, no values
    finally:
        models.close()

    differences = verify(store, list(READ_MODELS))
    assert all(d.identical for d in differences.values()), differences
    rebuild(store, ["profiles"])  # `idledger replay`
    swap_in(store, "profiles")
    replayed = ReadModels(store, ["profiles"])
    try:
        assert replayed.profiles.dump() == live
    finally:
        replayed.close()
