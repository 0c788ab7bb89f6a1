"""Sealing an event's personal values under its subject's data key.

An event class lists its personal fields in ``PERSONAL`` (a path, with ``*`` for
every value of a mapping, and the placeholder that stands in its place). On the
way to the store those values are replaced by their placeholders and sealed, as
one AES-GCM ciphertext bound to the event (topic, aggregate, version), under
``SEALED_KEY`` in the payload. On the way back they are opened and put back; if
the subject's key has been destroyed (erasure), the placeholders stay: the event
keeps its shape (ids, times, causes, counts) and shows ``erased`` for the values.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SEALED_KEY = "_sealed"
ERASED = "erased"
NONCE_BYTES = 12


class ErasedId:
    """Placeholder for an identifying value (external_id, alias id): unique per
    subject, so that read models keyed by it (aliases) never collide on it."""


ERASED_ID = ErasedId()
WHOLE = "*whole*"  # every field (snapshots): unreadable without the key


class SubjectErased(Exception):
    """A sealed payload whose key is gone, where placeholders cannot stand in."""


def placeholder_for(template: Any, subject: UUID) -> Any:
    return f"{ERASED}:{subject}" if isinstance(template, ErasedId) else template


@lru_cache(maxsize=65_536)
def _cipher(key: bytes) -> AESGCM:
    return AESGCM(key)


def seal(
    state: dict[str, Any], personal: dict[str, Any], key: bytes, subject: UUID, bound: bytes
) -> None:
    """Replace the personal values of ``state`` in place and add their ciphertext."""
    # (concrete path as a list of keys, value): a tag key may hold any character
    taken: list[tuple[list[str], Any]] = []
    for path, template in personal.items():
        if path == WHOLE:
            taken.append(([], {k: state.pop(k) for k in list(state)}))
            continue
        for concrete, value in _find(state, path.split("."), []):
            if value is not None:
                taken.append((concrete, value))
                _put(state, concrete, placeholder_for(template, subject))
    if taken:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = _cipher(key).encrypt(nonce, orjson.dumps(taken), bound)
        state[SEALED_KEY] = base64.b64encode(nonce + ciphertext).decode()


def unseal(state: dict[str, Any], key: bytes | None, bound: bytes) -> bool:
    """Put the sealed values back (the placeholders stay when ``key`` is ``None``);
    return whether they were put back."""
    sealed = state.pop(SEALED_KEY, None)
    if sealed is None:
        return True
    if key is None:
        return False
    raw = base64.b64decode(sealed)
    taken = orjson.loads(_cipher(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound))
    for concrete, value in taken:
        if concrete:
            _put(state, concrete, value)
        else:
            state.update(value)
    return True


def _find(node: Any, parts: list[str], prefix: list[str]) -> list[tuple[list[str], Any]]:
    """Every (concrete path, value) that ``parts`` names in ``node``."""
    if not parts:
        return [(prefix, node)]
    if not isinstance(node, dict):
        return []
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else [head] if head in node else []
    found = []
    for key in keys:
        found += _find(node[key], rest, [*prefix, key])
    return found


def _put(node: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
