"""Running the read models: in-process (the embedded default, beside the API) or
as a separate worker (`idledger project --follow`), several API processes then
sharing one worker on PostgreSQL.

Followers wake when the log grows: on PostgreSQL from the library's NOTIFY on
the events table, in-process from ``nudge()``; and in any case every
``poll_interval`` seconds, so a lost notification costs at most one interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from domain.service import LedgerLog
from projections.engine import PAGE_SIZE, READ_MODELS, Follower, Lag
from projections.mau import MauTables
from projections.ownership import OwnershipTables
from projections.profiles import ProfilesTables

log = logging.getLogger(__name__)


class ReadModels:
    """The read models of one store, for queries (no runner needed to read)."""

    def __init__(
        self,
        store_env: dict[str, str],
        names: Iterable[str] = tuple(READ_MODELS),
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store_env = store_env
        self.log = LedgerLog(store_env)
        self.followers = {name: Follower(self.log, store_env, name, page_size) for name in names}

    @property
    def profiles(self) -> ProfilesTables:
        view = self.followers["profiles"].view
        assert isinstance(view, ProfilesTables), "profiles is not among the read models opened"
        return view

    @property
    def ownership(self) -> OwnershipTables:
        view = self.followers["ownership"].view
        assert isinstance(view, OwnershipTables), "ownership is not among the read models opened"
        return view

    @property
    def mau(self) -> MauTables:
        view = self.followers["mau"].view
        assert isinstance(view, MauTables), "mau is not among the read models opened"
        return view

    def wait_for(self, position: int | None, timeout: float = 5.0) -> bool:
        """Read-your-writes: wait (bounded) until every read model has ``position``."""
        deadline = time.monotonic() + timeout
        return all(
            f.view.wait_for(position, max(deadline - time.monotonic(), 0.0))
            for f in self.followers.values()
        )

    def lag(self) -> dict[str, Lag]:
        return {name: follower.lag() for name, follower in self.followers.items()}

    def close(self) -> None:
        for follower in self.followers.values():
            follower.close()
        self.log.close()
