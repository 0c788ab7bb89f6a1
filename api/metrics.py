"""Prometheus metrics, served at ``/metrics``.

Counted as they happen (``prometheus_client`` counters and histograms):
requests and their latency per route *template* (never the raw path), write
requests (commands) per endpoint and outcome, events appended, optimistic-
concurrency races lost and store errors. Computed when scraped (a collector,
not a thread): projection lag per read model (events and seconds), dead
letters, whether this process finds the store reachable, and process metrics.

Several workers (``idledger serve --workers N``) count into files under
``PROMETHEUS_MULTIPROC_DIR`` (``serve`` creates a temporary one and removes it
at exit), and a scrape of any worker adds up every worker's counts.
``IDLEDGER_METRICS=0`` leaves all of it out of the application.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from idledger.api.switches import switch
from idledger.domain.service import LedgerBase
from idledger.partitions import partition_suffix
from idledger.projections.dead_letters import describe, is_store_failure
from idledger.projections.engine import Lag

if TYPE_CHECKING:  # the runtime's gate counts into these metrics
    from idledger.api.runtime import Runtime

# No `_created` twin of every series: scrapes stay small.
disable_created_metrics()  # type: ignore[no-untyped-call]

ENV_VAR = "IDLEDGER_METRICS"
MULTIPROCESS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
PATH = "/metrics"

log = logging.getLogger(__name__)

# Created once per process and registered in no global registry: each app
# instance builds its own registry around them (tests create many apps).
REQUESTS = Counter(
    "idledger_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=None,
)
LATENCY = Histogram(
    "idledger_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method and route template.",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=None,
)
COMMANDS = Counter(
    "idledger_commands",
    "Write requests (commands) by endpoint and outcome: ok, rejected (4xx), "
    "conflict (409), unavailable (503) or error.",
    ["command", "outcome"],
    registry=None,
)
EVENTS_APPENDED = Counter(
    "idledger_events_appended", "Events made durable in the event log.", registry=None
)
CONFLICTS = Counter(
    "idledger_write_conflicts",
    "Optimistic-concurrency races lost: another writer saved first and the command "
    "was re-run on fresh state.",
    registry=None,
)
STORE_ERRORS = Counter(
    "idledger_store_errors",
    "Requests or scrapes that found the event store unreachable, by error class.",
    ["kind"],
    registry=None,
)
COUNTED = (REQUESTS, LATENCY, COMMANDS, EVENTS_APPENDED, CONFLICTS, STORE_ERRORS)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
COMMAND_PREFIX = "/apps"  # the ledger's write endpoints; other writes are not commands


def metrics_enabled() -> bool:
    """Whether ``IDLEDGER_METRICS`` leaves the metrics on (``1``, the default; ``0``: off)."""
    return switch(ENV_VAR, default=True)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_DIR_VAR) or None


def outcome_of(status: int | None) -> str:
    if status is None or status >= 500:
        return "unavailable" if status == 503 else "error"
    if status == 409:
        return "conflict"
    return "rejected" if status >= 400 else "ok"


def count_request(
    method: str, route: Any, template: str, status: int | None, seconds: float
) -> None:
    """Count one answered request (the request middleware calls this)."""
    REQUESTS.labels(method, template, str(status) if status is not None else "none").inc()
    LATENCY.labels(method, template).observe(seconds)
    if method in WRITE_METHODS and template.startswith(COMMAND_PREFIX):
        name = getattr(route, "name", None)
        if isinstance(name, str):
            COMMANDS.labels(name, outcome_of(status)).inc()


def count_store_error(error: BaseException) -> None:
    STORE_ERRORS.labels(type(error).__name__).inc()


class LedgerCounts:
    """Connects the ledgers (one per partition) to the counters: their events
    appended through each ledger's ``on_appended`` hook, and their races lost
    (``races_lost``, a plain count each ledger keeps) carried over after each
    write request."""

    def __init__(self, *ledgers: LedgerBase) -> None:
        self.ledgers = ledgers
        self._races_seen = self._races_lost()
        for ledger in ledgers:
            ledger.on_appended = EVENTS_APPENDED.inc

    def _races_lost(self) -> int:
        return sum(ledger.races_lost for ledger in self.ledgers)

    def after_write(self) -> None:
        # Runs on the event loop only, so the difference is never counted twice.
        races = self._races_lost()
        if races != self._races_seen:
            CONFLICTS.inc(races - self._races_seen)
            self._races_seen = races


class ReadModelCollector:
    """Projection lag and dead letters per read model, and whether the store
    answers, computed from the store when scraped. While the store is known to
    be down the read-model gauges are left out (the scrape still answers)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        runtime = getattr(self.app.state, "runtime", None)
        if runtime is None:  # not started, or shut down
            return
        # Read models are named per partition: "profiles", then "profiles@p1"...
        # A partition whose store is down is left out (the scrape still answers).
        lags: dict[str, Lag] = {}
        dead_letters: dict[str, int] = {}
        for partition in runtime.each_partition():
            gauges = _read_model_gauges(partition)
            if gauges is None:
                continue
            suffix = partition_suffix(partition.partition)
            lags.update({name + suffix: lag for name, lag in gauges[0].items()})
            dead_letters.update({name + suffix: count for name, count in gauges[1].items()})
        up = GaugeMetricFamily(
            "idledger_store_up",
            "1 while this process finds the event store (every partition's) reachable, else 0.",
            value=1 if all(p.gate.is_open for p in runtime.each_partition()) else 0,
        )
        yield up
        if not lags:
            return
        events = GaugeMetricFamily(
            "idledger_projection_lag_events",
            "Events in the log that the read model has not applied yet.",
            labels=["read_model"],
        )
        seconds = GaugeMetricFamily(
            "idledger_projection_lag_seconds",
            "Age of the oldest event the read model has not applied yet (0 when caught up).",
            labels=["read_model"],
        )
        dead = GaugeMetricFamily(
            "idledger_projection_dead_letters",
            "Events the read model set aside (`idledger dead-letters` lists them).",
            labels=["read_model"],
        )
        for name, lag in sorted(lags.items()):
            events.add_metric([name], lag.events)
            seconds.add_metric([name], lag.seconds)
            dead.add_metric([name], dead_letters.get(name, 0))
        yield from (events, seconds, dead)


def _read_model_gauges(runtime: Runtime) -> tuple[dict[str, Lag], dict[str, int]] | None:
    """One partition's lags and dead letters; None while its store is down."""
    if not runtime.gate.is_open:
        return None
    try:
        return runtime.models.lag(), runtime.models.dead_letters()
    except Exception as error:
        if not is_store_failure(error):
            log.warning("read-model metrics left out: %s", describe(error))
        else:
            runtime.gate.trip(error)
        return None


def registry_for(app: FastAPI) -> CollectorRegistry:
    """What a scrape of this app reports. With several workers the counters are
    read from every worker's files; process metrics are those of the worker
    that answers the scrape."""
    registry = CollectorRegistry()
    if multiprocess_dir() is not None:
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in COUNTED:
            registry.register(metric)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
    ProcessCollector(registry=registry)
    registry.register(ReadModelCollector(app))
    return registry


def install_metrics(app: FastAPI) -> None:
    """Serve ``/metrics`` (plain Prometheus text; no key: it holds no personal
    value, only route templates, read-model names and counts)."""
    registry = registry_for(app)

    def metrics() -> Response:  # sync: the read-model gauges query the store
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(PATH, metrics, methods=["GET"], include_in_schema=False)


@contextmanager
def worker_metrics_dir(workers: int) -> Iterator[None]:
    """With several worker processes, give them a fresh directory to count into
    (``PROMETHEUS_MULTIPROC_DIR``), removed when the server stops. A directory the
    operator set is used as it is (and must be emptied between runs)."""
    if workers < 2 or not metrics_enabled() or multiprocess_dir() is not None:
        yield
        return
    directory = tempfile.mkdtemp(prefix="idledger-metrics-")
    os.environ[MULTIPROCESS_DIR_VAR] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_DIR_VAR, None)
        shutil.rmtree(directory, ignore_errors=True)
