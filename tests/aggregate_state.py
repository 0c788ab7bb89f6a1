"""An aggregate's state in a form that compares exactly: ``==`` alone would
let 1.5 equal Decimal("1.50") and a str equal its StrEnum."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from idledger.domain.base import Aggregate


def exact(value: Any) -> Any:
    """``value`` with the type of every part spelled out; datetimes by their
    ISO form, which keeps the UTC offset but not the tzinfo class."""
    if isinstance(value, dict):
        return ("dict", [(exact(k), exact(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [exact(v) for v in value])
    if isinstance(value, BaseModel):
        return (type(value).__name__, exact(dict(value)))
    if isinstance(value, datetime):
        return ("datetime", value.isoformat())
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    return (type(value).__name__, value)


def state(aggregate: Aggregate | None) -> Any:
    """Everything an aggregate holds (its id, version and times included)."""
    if aggregate is None:
        return None
    held = {k: v for k, v in sorted(vars(aggregate).items()) if k != "_pending_events"}
    return (type(aggregate).__name__, exact(held))
