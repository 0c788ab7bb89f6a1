"""Logging: one JSON object per line, or a human line on a terminal.

Every line carries the time, level, logger and message; a line written while a
request is served also carries its request id and, once routing has chosen them,
the app id and the route *template* (never the raw path, whose segments hold
external ids, aliases, tokens and addresses). The access line adds the method,
status and duration.

Exceptions are logged as their type and stack, without their message: messages
of store and validation errors can quote the values that caused them.

``idledger serve`` builds the configuration once (``logging_config``) and hands
it to uvicorn, which applies it in every worker process, so uvicorn's own lines
are formatted the same way. Settings: ``IDLEDGER_LOG_LEVEL`` (``INFO``) and
``IDLEDGER_LOG_FORMAT`` (``auto``: human on a terminal, JSON otherwise).
"""

from __future__ import annotations

import logging
import logging.config
import os
import re
import sys
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from starlette.types import Scope

from idledger.api.route_template import template_of

LEVEL_VAR = "IDLEDGER_LOG_LEVEL"
FORMAT_VAR = "IDLEDGER_LOG_FORMAT"
FORMATS = ("auto", "json", "human")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# A client's X-Request-Id is kept only if it looks like an id: anything else (an
# email address, a sentence) is replaced, so that a header cannot smuggle
# personal values into the logs.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


class LogSettingsError(ValueError):
    """``IDLEDGER_LOG_LEVEL`` or ``IDLEDGER_LOG_FORMAT`` holds an unknown value."""


@dataclass(slots=True)
class RequestContext:
    """The request being served, for every log line written meanwhile. The route
    and app id are read from the ASGI scope when a line is written: routing fills
    them in after the request has begun."""

    request_id: str
    scope: Scope

    @property
    def route(self) -> str | None:
        route = self.scope.get("route")
        return None if route is None else template_of(route)

    @property
    def app_id(self) -> str | None:
        return sane_app_id((self.scope.get("path_params") or {}).get("app_id"))


current_request: ContextVar[RequestContext | None] = ContextVar("idledger_request", default=None)


def sane_request_id(presented: bytes | None) -> str:
    """The client's request id if it looks like one, else a fresh random one."""
    if presented is not None:
        text = presented.decode("latin-1")
        if SANE_REQUEST_ID.fullmatch(text):
            return text
    return os.urandom(8).hex()


def sane_app_id(segment: object) -> str | None:
    """The app id of a path, only when it is a UUID: a path segment is the
    client's text, and only an app id in its expected shape is worth logging."""
    if isinstance(segment, str) and UUID_TEXT.fullmatch(segment):
        return str(UUID(segment))
    return None


def request_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of the request being served, and a record's own ``extra``
    values for them (the access line passes them), which win."""
    fields: dict[str, Any] = {}
    context = current_request.get()
    if context is not None:
        fields["request_id"] = context.request_id
        app_id, route = context.app_id, context.route
        if app_id is not None:
            fields["app_id"] = app_id
        if route is not None:
            fields["route"] = route
    for name in ("method", "route", "status", "duration_ms"):
        value = record.__dict__.get(name)
        if value is not None:
            fields[name] = value
    return fields


def exception_fields(record: logging.LogRecord) -> dict[str, str]:
    """An exception's type and stack, without its message (it may quote values)."""
    if not record.exc_info or record.exc_info[0] is None:
        return {}
    kind, _, tb = record.exc_info
    stack = "".join(traceback.format_tb(tb)).rstrip()
    return {"exc_type": f"{kind.__module__}.{kind.__qualname__}", "stack": stack}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the request's
    fields (request_id, app_id, route, method, status, duration_ms) when set."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(request_fields(record))
        line.update(exception_fields(record))
        return orjson.dumps(line).decode()


class HumanFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message> key=value...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = request_fields(record)
        for already_in_message in ("method", "status", "duration_ms"):
            fields.pop(already_in_message, None)
        if record.name == ACCESS_LOGGER:
            fields.pop("route", None)  # the access line's message names it
        text = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        problem = exception_fields(record)
        if problem:
            text += f"\n{problem['stack']}\n{problem['exc_type']} (message not logged)"
        return text


ACCESS_LOGGER = "idledger.access"


def log_level() -> str:
    """``IDLEDGER_LOG_LEVEL``, checked."""
    level = os.environ.get(LEVEL_VAR, "INFO").strip().upper() or "INFO"
    if level not in LEVELS:
        raise LogSettingsError(f"{LEVEL_VAR}={level!r}: choose one of {', '.join(LEVELS)}")
    return level


def log_format(stream: Any = None) -> str:
    """``IDLEDGER_LOG_FORMAT``, checked; ``auto`` is human on a terminal, else JSON."""
    chosen = os.environ.get(FORMAT_VAR, "auto").strip().lower() or "auto"
    if chosen not in FORMATS:
        raise LogSettingsError(f"{FORMAT_VAR}={chosen!r}: choose one of {', '.join(FORMATS)}")
    if chosen == "auto":
        stream = stream if stream is not None else sys.stderr
        return "human" if stream.isatty() else "json"
    return chosen


def logging_config(level: str | None = None, fmt: str | None = None) -> dict[str, Any]:
    """A ``dictConfig`` for the whole process: one stderr handler on the root
    logger, which idledger's, uvicorn's and the libraries' loggers all reach
    (``level`` for idledger's and uvicorn's, at least WARNING for the others).
    Loggers created before it (at import time) keep working."""
    level = level or log_level()
    fmt = fmt or log_format()
    formatter = JsonFormatter if fmt == "json" else HumanFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"idledger": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "idledger",
                "stream": "ext://sys.stderr",
            }
        },
        # Other libraries say only warnings and worse: their debug lines (connection
        # attempts, say) are not written with personal data in mind.
        "root": {"level": max(level, "WARNING", key=LEVELS.index), "handlers": ["stderr"]},
        "loggers": {
            "idledger": {"level": level},
            # uvicorn's loggers bring their own handlers by default: clear them, so
            # that their lines go to the root handler, formatted like ours.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            # uvicorn's access log prints raw paths; ours (idledger.access) replaces it.
            "uvicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    logging.config.dictConfig(logging_config(level, fmt))


def ensure_logging() -> None:
    """Configure logging when nobody has (the app run by a bare ``uvicorn``, whose
    default configuration leaves the root logger without a handler). Under
    ``idledger serve``, or a test runner capturing logs, leave things as they are."""
    if not logging.getLogger().handlers:
        configure_logging()
