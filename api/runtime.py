"""What a running service holds: the ledger (writes), the read models (reads)
and, in the embedded mode, the projector that keeps them caught up."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from api.settings import Settings, open_ledger, store_env
from domain.ledger import Ledger
from projections.lock import ProjectionBusy
from projections.service import Projector, ReadModels

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    ledger: Ledger
    models: ReadModels
    projector: Projector | None

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
