"""On/off settings read from the environment (``IDLEDGER_METRICS``,
``IDLEDGER_ACCESS_LOG``): a value that is neither on nor off is refused rather
than guessed, so that a typo does not silently turn a feature on or off."""

from __future__ import annotations

import os

ON = frozenset({"1", "true", "yes", "on"})
OFF = frozenset({"0", "false", "no", "off"})


class SwitchError(ValueError):
    """An on/off variable holds something else; the message names it."""


def switch(name: str, *, default: bool) -> bool:
    """The variable ``name`` as on or off (unset or empty: ``default``)."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ON:
        return True
    if value in OFF:
        return False
    raise SwitchError(f"{name} must be 1 (on) or 0 (off), not {value[:20]!r}")
