"""Example bodies for the OpenAPI document: one story (alice, her iPhone, bob) told
by every route, so the examples in /docs agree with each other.
``tests/api/test_openapi_docs.py`` checks each against its route's own model."""

from __future__ import annotations

from typing import Any

from idledger.api.openapi_docs import Failure, answer, example, request_examples

APP_ID = "3beb3078-e0f1-4629-af17-fde833b9f716"
ALICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
BOB = "d8c8f28a-a83e-4242-936b-fa59838ea925"
PHONE = "520993c7-3e06-4417-b8e2-0cf1c81cb66d"
EMAIL = "e058a8d6-781e-4560-bacb-fc1c8ba28a46"
CREATED = "2026-03-02T09:15:00.123456Z"
MOVED = "2026-03-05T18:40:12.654321Z"

# -- errors --------------------------------------------------------------------

INVALID_FIELD = Failure(
    400,
    "invalid-value",
    "A field broke a rule",
    "invalid-value",
    "external_id: 'null' is a placeholder, not an id",
    "external_id",
)
INVALID_QUERY = Failure(
    400,
    "invalid-value",
    "A query parameter is not valid",
    "invalid-value",
    "Input should be a valid datetime or date, input is too short",
    "query.at",
)
INVALID_SEGMENT = Failure(
    400,
    "invalid-value",
    "A path segment holds a control character",
    "invalid-value",
    "alias_id: holds the control character U+000A, which is not allowed here",
    "alias_id",
)
APP_KEY_REFUSED = Failure(
    401,
    "unauthorized",
    "No key, a wrong key or an unknown app",
    "unauthorized",
    "missing or invalid Authorization: Key <REST API key>",
)
ORGANIZATION_KEY_REFUSED = Failure(
    401,
    "unauthorized",
    "No organization key, or a wrong one",
    "unauthorized",
    "missing or invalid Authorization: Key <organization key>",
)
USER_NOT_FOUND = Failure(
    404,
    "user-not-found",
    "No user holds this alias",
    "not-found",
    "user external_id=alice not found",
)
SUBSCRIPTION_NOT_FOUND = Failure(
    404,
    "subscription-not-found",
    "No such subscription in this app",
    "not-found",
    f"subscription {PHONE} not found",
)
ALIAS_NOT_FOUND = Failure(
    404,
    "alias-not-found",
    "The user has no such alias",
    "not-found",
    "the user has no alias labelled 'crm'",
)
APP_NOT_FOUND = Failure(404, "app-not-found", "No such app", "not-found", f"app {APP_ID} not found")
ALIAS_CLAIMED = Failure(
    409,
    "user-2",
    "An alias belongs to another user",
    "user-2",
    "One or more Aliases claimed by another User",
    meta={"conflicting_aliases": {"external_id": "alice"}},
)
RACES_LOST = Failure(
    409,
    "concurrency-conflict",
    "Other writers kept changing the same user; retry",
    "concurrency-conflict",
    "update_user lost 12 optimistic-concurrency races in a row; retry it",
)
TOO_LARGE = Failure(
    413,
    "body-too-large",
    "The body is over the limit",
    "body-too-large",
    "request body over 262144 bytes",
)
STORE_DOWN = Failure(
    503,
    "store-unavailable",
    "The event store does not answer; nothing was written",
    "store-unavailable",
    "the event store is unreachable: connection refused",
)
READ_MODEL_BEHIND = Failure(
    503,
    "read-model-behind",
    "Written, but the read models are late; retry to read it",
    "read-model-behind",
    "written at log position 42, but the read models (profiles) have not applied it "
    "within 2 s; retry the request",
)

# -- bodies -------------------------------------------------------------------------

IPHONE = {
    "id": PHONE,
    "type": "iOSPush",
    "token": "apns-token",
    "enabled": True,
    "notification_types": 1,
    "session_time": 0,
    "session_count": 0,
    "sdk": "050213",
    "device_model": "iPhone15,2",
    "device_os": "17.4",
    "app_version": "1.4.0",
}
ALICE_IDENTITY = {"onesignal_id": ALICE, "external_id": "alice"}
ALICE_PROPERTIES = {"tags": {"plan": "gold"}, "language": "en", "timezone_id": "Europe/Paris"}
ALICE_USER = {"identity": ALICE_IDENTITY, "properties": ALICE_PROPERTIES, "subscriptions": [IPHONE]}
PIXEL = {
    "id": PHONE,
    "type": "AndroidPush",
    "token": "fcm-token",
    "enabled": True,
    "session_time": 0,
    "session_count": 0,
}
ANONYMOUS_USER = {
    "identity": {"onesignal_id": BOB},
    "properties": {"tags": {}},
    "subscriptions": [PIXEL],
}

CREATE_USER = request_examples(
    identified=example(
        "A user with an external_id, tags and a push subscription",
        {
            "identity": {"external_id": "alice"},
            "properties": {
                "tags": {"plan": "gold"},
                "language": "en",
                "timezone_id": "Europe/Paris",
            },
            "subscriptions": [
                {
                    "type": "iOSPush",
                    "token": "apns-token",
                    "notification_types": 1,
                    "sdk": "050213",
                    "device_model": "iPhone15,2",
                    "device_os": "17.4",
                    "app_version": "1.4.0",
                }
            ],
        },
    ),
    anonymous=example(
        "A device's first start: an anonymous user with its push subscription",
        {"subscriptions": [{"type": "AndroidPush", "token": "fcm-token"}]},
    ),
)
USER_CREATED = answer(
    "A new user",
    identified=example("alice, created", ALICE_USER),
    anonymous=example("An anonymous user, created", ANONYMOUS_USER),
)
USER_EXISTING = answer(
    "The identity named an existing user, which was updated",
    existing=example("alice already existed", ALICE_USER),
)
USER_FOUND = answer(
    "The user, its properties and subscriptions", alice=example("alice", ALICE_USER)
)

UPDATE_USER = request_examples(
    tags=example(
        "Set a tag, delete another (an empty value deletes)",
        {"properties": {"tags": {"plan": "platinum", "trial": ""}}},
    ),
    activity=example(
        "A session and a purchase",
        {
            "deltas": {
                "session_count": 1,
                "session_time": 120,
                "purchases": [{"sku": "gold", "amount": "1.99", "iso": "USD"}],
            }
        },
    ),
)
PROPERTIES_UPDATED = answer(
    "Accepted: the user's properties now",
    updated=example(
        "After the update",
        {
            "properties": {
                **ALICE_PROPERTIES,
                "tags": {"plan": "platinum"},
                "purchases": [{"sku": "gold", "amount": "1.99", "iso": "USD", "count": 1}],
            }
        },
    ),
)
DELETED = answer("Done", done=example("An empty object", {}))

ALIASES = request_examples(
    alias=example("Add an alias", {"identity": {"crm": "42"}}),
    login=example(
        "Log an anonymous user in (the SDK's login)", {"identity": {"external_id": "alice"}}
    ),
)
IDENTITY = answer(
    "The user's identity: onesignal_id, external_id and every alias",
    alice=example("alice", {"identity": {**ALICE_IDENTITY, "crm": "42"}}),
)

EMAIL_SUBSCRIPTION = {
    "id": EMAIL,
    "type": "Email",
    "token": "alice@example.com",
    "enabled": True,
    "session_time": 0,
    "session_count": 0,
}
CREATE_SUBSCRIPTION = request_examples(
    email=example(
        "An email address", {"subscription": {"type": "Email", "token": "alice@example.com"}}
    ),
    sms=example("A phone number", {"subscription": {"type": "SMS", "token": "+15551234567"}}),
)
SUBSCRIPTION_CREATED = answer(
    "A new subscription on this user",
    email=example("Created", {"subscription": EMAIL_SUBSCRIPTION}),
)
SUBSCRIPTION_UNCHANGED = answer(
    "Already on this user", email=example("Unchanged", {"subscription": EMAIL_SUBSCRIPTION})
)
SUBSCRIPTION_MOVED = answer(
    "Moved here from another user (same type and token)",
    email=example("Moved", {"subscription": EMAIL_SUBSCRIPTION}),
)
UPDATE_SUBSCRIPTION = request_examples(
    disable=example("Stop sending to it", {"subscription": {"enabled": False}}),
    device=example(
        "A new token and app version",
        {"subscription": {"token": "apns-token-2", "app_version": "1.5.0"}},
    ),
)
TRANSFER = request_examples(
    to_bob=example("Move it to the user with external_id bob", {"identity": {"external_id": "bob"}})
)
NEW_OWNER = answer(
    "The identity of the subscription's new owner",
    bob=example("bob", {"identity": {"onesignal_id": BOB, "external_id": "bob"}}),
)

CREATE_APP = request_examples(app=example("An app", {"name": "My app"}))
APP: dict[str, Any] = {
    "id": APP_ID,
    "name": "My app",
    "created_at": "2026-03-01T08:00:00.000000+00:00",
    "updated_at": "2026-03-01T08:00:00.000000+00:00",
    "players": 0,
    "messageable_players": 0,
}
APP_WITH_KEY = answer(
    "The app, with its REST API key in basic_auth_key (shown only here)",
    app=example("My app", {**APP, "basic_auth_key": "cAE7XtPtgqgV5AiW5SG0SvX-77MoVeorhflNiy2is98"}),
)
APP_FOUND = answer("The app (without its key)", app=example("My app", APP))

# -- idledger's own -----------------------------------------------------------------

TIMELINE = answer(
    "The ownership timeline (each interval owns [start, end)), or with `at` the owner then",
    timeline=example(
        "Created on alice, moved to bob",
        {
            "subscription_id": PHONE,
            "intervals": [
                {
                    "owner_id": ALICE,
                    "start": CREATED,
                    "end": MOVED,
                    "cause": "api",
                    "ended_by": "transfer",
                },
                {
                    "owner_id": BOB,
                    "start": MOVED,
                    "end": None,
                    "cause": "transfer",
                    "ended_by": None,
                },
            ],
        },
    ),
    at=example(
        "?at=2026-03-04T12:00:00Z: alice owned it then",
        {
            "subscription_id": PHONE,
            "at": "2026-03-04T12:00:00Z",
            "owner_id": ALICE,
            "intervals": [],
        },
    ),
)
AS_OF = answer(
    "The user as it stood at that instant",
    before_move=example(
        "alice on 2026-03-04, still with her iPhone",
        {
            "onesignal_id": ALICE,
            "at": "2026-03-04T12:00:00Z",
            "status": "live",
            "merged_into": None,
            "survivor_id": ALICE,
            "identity": ALICE_IDENTITY,
            "properties": ALICE_PROPERTIES,
            "subscription_ids": [PHONE],
        },
    ),
)
EVENTS = answer(
    "A page of the user's events, oldest first; next_after pages on (null: the last page)",
    first_page=example(
        "?limit=3",
        {
            "onesignal_id": ALICE,
            "next_after": 3,
            "events": [
                {
                    "version": 1,
                    "type": "idledger.user:Created",
                    "timestamp": CREATED,
                    "actor": "system",
                    "data": {"app_id": APP_ID, "cause": "api"},
                },
                {
                    "version": 2,
                    "type": "idledger.user:ExternalIdSet",
                    "timestamp": CREATED,
                    "actor": "system",
                    "data": {"external_id": "alice", "replaced": None},
                },
                {
                    "version": 3,
                    "type": "idledger.user:TagsChanged",
                    "timestamp": CREATED,
                    "actor": "system",
                    "data": {"assigned": {"plan": "gold"}, "removed": []},
                },
            ],
        },
    ),
)
MAU = answer(
    "Rolling 30-day monthly active users, per day",
    range=example(
        "?from=2026-03-01&to=2026-03-02",
        {
            "app_id": APP_ID,
            "window_days": 30,
            "days": [
                {
                    "day": "2026-03-01",
                    "total": 1200,
                    "by_type": {"iOSPush": 700, "AndroidPush": 500},
                },
                {
                    "day": "2026-03-02",
                    "total": 1210,
                    "by_type": {"iOSPush": 705, "AndroidPush": 505},
                },
            ],
        },
    ),
)
DEVICE = request_examples(
    android=example(
        "What median_onesignal_info() gives on Android, with the app's own user id",
        {
            "user_id": "alice",
            "oneSignalUserId": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
            "oneSignalPushToken": "fcm-token",
            "oneSignalSubscribed": True,
            "platform": "android",
            "appVersion": "2.3.1",
            "installationId": "c0ffee",
            "language": "fr",
            "model": "Pixel 8",
            "os": "Android",
            "osVersion": "14",
            "timeZone": "Europe/Paris",
        },
    ),
    logged_out=example(
        "A device without a signed-in user",
        {"oneSignalPushToken": "apns-token", "platform": "ios"},
    ),
)
DEVICE_ASSOCIATED = answer(
    "The push subscription and the user it is logged in to",
    android=example(
        "alice's Pixel", {"subscription_id": PHONE, "onesignal_id": ALICE, "external_id": "alice"}
    ),
)

# -- health -------------------------------------------------------------------------

HEALTHY = answer("Alive", ok=example("Alive", {"status": "ok"}))
READY = answer(
    "The store answers and the read models are projected",
    ready=example(
        "Ready",
        {
            "status": "ready",
            "log_head": 42,
            "dead_letters": {"profiles": 0, "ownership": 0, "mau": 0},
            "problems": [],
        },
    ),
)
NOT_READY = {
    "description": "Not ready: the store is unreachable or the projector stopped",
    "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    "content": {
        "application/json": {
            "examples": {
                "store-down": example(
                    "The store does not answer",
                    {
                        "status": "unavailable",
                        "problems": ["event store unreachable: connection refused"],
                    },
                ),
            }
        }
    },
}
LAG = answer(
    "Per read model: events behind, the age of the oldest, dead letters",
    caught_up=example(
        "Caught up",
        {
            name: {"events": 0, "seconds": 0.0, "dead_letters": 0}
            for name in ("profiles", "ownership", "mau")
        },
    ),
)
