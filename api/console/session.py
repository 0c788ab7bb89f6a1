"""The console's session: a signed cookie naming who signed in, never their key.

The cookie holds the app id (or "organization") and a fingerprint of the key as
the ledger knows it (the app's key hash, or the organization key's hash), an
issue time and an expiry, signed with HMAC-SHA256. It is checked on every page:
a bad signature, a past expiry, or a fingerprint that no longer matches (the key
was rotated) all mean "sign in again".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

COOKIE_NAME = "idledger_console"
VERSION = "v1"


@dataclass(frozen=True)
class Session:
    """Who is signed in: one app (``app_id``), or the organization (``app_id`` None)."""

    app_id: UUID | None
    fingerprint: str
    expires_at: int

    @property
    def is_organization(self) -> bool:
        return self.app_id is None


def fingerprint(key: bytes, key_material: str) -> str:
    """Names a key without revealing it: an HMAC under the signing key of what the
    ledger stores about it (the app's key hash), so a rotation changes it."""
    return hmac.new(key, b"fingerprint\x1f" + key_material.encode(), hashlib.sha256).hexdigest()


def organization_material(admin_key: str) -> str:
    return hashlib.sha256(admin_key.encode()).hexdigest()


def seal(key: bytes, session: Session, issued_at: int) -> str:
    payload = {
        "app": str(session.app_id) if session.app_id else None,
        "fp": session.fingerprint,
        "iat": issued_at,
        "exp": session.expires_at,
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{VERSION}.{body}.{_b64(_mac(key, body))}"


def open_cookie(key: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie carries, or None if it is missing, tampered with,
    malformed or expired."""
    if not cookie:
        return None
    version, _, rest = cookie.partition(".")
    body, _, mac = rest.partition(".")
    if version != VERSION or not body or not mac:
        return None
    try:
        given = base64.urlsafe_b64decode(_padded(mac))
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(key, body)):
        return None
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(_padded(body)))
    expires_at = payload["exp"]
    if not isinstance(expires_at, int) or expires_at <= (now or time.time()):
        return None
    app = payload["app"]
    return Session(UUID(app) if app else None, str(payload["fp"]), expires_at)


def _mac(key: bytes, body: str) -> bytes:
    return hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _padded(text: str) -> bytes:
    return (text + "=" * (-len(text) % 4)).encode("ascii", "strict")
