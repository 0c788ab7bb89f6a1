"""The console's settings (environment variables prefixed ``IDLEDGER_CONSOLE_``)
and the key its session cookies are signed with."""

from __future__ import annotations

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_CHARS = 32
HKDF_INFO = b"idledger console session cookie v1"


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IDLEDGER_CONSOLE_")

    secret: str | None = Field(
        default=None,
        min_length=MIN_SECRET_CHARS,  # refused at start-up (`serve` exits 2), not page by page
        description="Signs the console's session cookie (at least 32 characters, the same "
        "in every worker). Default: derived from IDLEDGER_ADMIN_KEY with HKDF.",
    )
    session_seconds: int = Field(
        default=8 * 3600, gt=0, description="How long a console sign-in lasts."
    )


class ConsoleClosed(Exception):
    """No key to sign sessions with: the message says which setting to give."""


def signing_key(settings: ConsoleSettings, admin_key: str | None) -> bytes:
    """The cookie-signing key: HKDF of IDLEDGER_CONSOLE_SECRET, else of the organization
    key (so changing either signs everyone out). Never the raw secret itself, so the
    organization key is not what signs cookies."""
    material = settings.secret or admin_key
    if not material:
        raise ConsoleClosed(
            "the console needs IDLEDGER_CONSOLE_SECRET or IDLEDGER_ADMIN_KEY to sign sessions"
        )
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=HKDF_INFO).derive(material.encode())
