"""What a running service holds: the ledger (writes), the read models (reads)
and, in the embedded mode, the projector that keeps them caught up."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from uuid import UUID

from api.settings import Settings, open_ledger, store_env
from domain.app import App
from domain.ledger import Ledger
from projections.lock import ProjectionBusy
from projections.service import Projector, ReadModels

log = logging.getLogger(__name__)


KEY_CACHE_SECONDS = 1.0


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    models: ReadModels
    projector: Projector | None
    _apps: dict[UUID, tuple[float, App]] = field(default_factory=dict)

    def app(self, app_id: UUID) -> App:
        """The app, from the log, remembered for a second: keys are checked on every
        request, and a rotation elsewhere is seen within that second (at once here)."""
        cached = self._apps.get(app_id)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        app = self.ledger.get_app(app_id)
        self._apps[app_id] = (time.monotonic(), app)
        return app

    def forget_app(self, app_id: UUID) -> None:
        self._apps.pop(app_id, None)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        ledger = open_ledger(settings)
        models = ReadModels(store_env(settings.store_url))
        projector: Projector | None = None
        if settings.embedded_projector:
            projector = Projector(models, settings.poll_interval)
            try:
                projector.start()
            except ProjectionBusy:
                # Another worker of this service (or `idledger project`) owns them.
                log.info("read models are projected by another runner")
                projector = None
        return cls(settings, ledger, models, projector)

    def written(self, position: int | None) -> None:
        """Read-your-writes: wake the projector, then wait (bounded) for it."""
        if self.projector is not None:
            self.projector.nudge()
        self.models.wait_for(position, self.settings.consistency_timeout)

    def close(self) -> None:
        if self.projector is not None:
            self.projector.stop()
        self.models.close()
        self.ledger.close()
