"""Liveness, readiness, projection lag and dead letters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from idledger.api import examples as ex
from idledger.api.deps import RuntimeDep
from idledger.api.errors import RETRY_AFTER_SECONDS
from idledger.api.openapi_docs import errors
from idledger.api.queries import lag_report, readiness

router = APIRouter(tags=["health"])


@router.get("/health", responses={200: ex.HEALTHY})
async def health() -> dict[str, str]:
    """Alive: answered on the event loop at once, whatever the store is doing."""
    return {"status": "ok"}


@router.get("/ready", responses={200: ex.READY, 503: ex.NOT_READY})
def ready(request: Request) -> Any:
    """Ready when the store answers and the read models are being projected.
    Dead letters are reported but do not make the service unready: the other
    events, and the other apps, are served."""
    status, body = readiness(request.app.state.runtime)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse(body, status, headers=headers)


@router.get("/lag", responses={200: ex.LAG, **errors(ex.STORE_DOWN)})
def lag(runtime: RuntimeDep) -> dict[str, dict[str, int | float]]:
    """Per read model: events behind the log head, the age of the oldest of them,
    and the events set aside as dead letters (`idledger dead-letters` lists them)."""
    return lag_report(runtime)
