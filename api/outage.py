"""Answering while the store is down, and noticing when it is back.

When a request finds the store unreachable, the gate closes: every later request
that needs the store is answered 503 with ``Retry-After`` at once, instead of
each waiting out the connection timeouts (and blocking the event loop, for the
lookups served on it). A background probe opens the gate again as soon as the
store answers, so the same process serves normally without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from idledger.api.errors import ApiError, unavailable
from idledger.api.metrics import count_store_error
from idledger.projections.dead_letters import describe

log = logging.getLogger(__name__)
PROBE_FIRST_PAUSE = 0.2
PROBE_MAX_PAUSE = 1.0


class StoreGate:
    def __init__(self, probe: Callable[[], object]) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    @property
    def is_open(self) -> bool:
        return self._down_since is None

    @property
    def reason(self) -> str:
        return self._reason

    def check(self) -> None:
        """Raise the 503 a request gets while the store is known to be down."""
        if self._down_since is not None:
            raise self.refusal()

    def refusal(self) -> ApiError:
        return unavailable("store-unavailable", f"the event store is unreachable: {self._reason}")

    def trip(self, error: BaseException) -> None:
        count_store_error(error)  # every failure met, not only the one that closes the gate
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
            self._reason = describe(error)
        log.warning("event store unreachable (%s); answering 503 until it is back", self._reason)
        threading.Thread(target=self._watch, name="store-probe", daemon=True).start()

    def _watch(self) -> None:
        pause = PROBE_FIRST_PAUSE
        while not self._closed.wait(pause):
            try:
                self._probe()
            except Exception as error:
                self._reason = describe(error)
                pause = min(pause * 2, PROBE_MAX_PAUSE)
                continue
            down_for = time.monotonic() - (self._down_since or time.monotonic())
            self._down_since = None
            log.warning("event store reachable again after %.1f s", down_for)
            return
