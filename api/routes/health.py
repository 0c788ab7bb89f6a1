"""Liveness, readiness and projection lag."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Store or projector not ready"}})
def ready(runtime: RuntimeDep) -> Any:
    """Ready when the store answers and the read models are being projected."""
    problems = []
    try:
        head = runtime.ledger.recorder.max_notification_id() or 0
    except Exception as error:  # the store is down: say so, do not 500
        return JSONResponse({"status": "unavailable", "problems": [str(error)]}, 503)
    projector = runtime.projector
    if projector is not None and projector.error is not None:
        problems.append(f"projector stopped: {projector.error}")
    body = {
        "status": "ready" if not problems else "degraded",
        "log_head": head,
        "problems": problems,
    }
    return JSONResponse(body, 200 if not problems else 503)


@router.get("/lag")
def lag(runtime: RuntimeDep) -> dict[str, dict[str, int | float]]:
    """Per read model: events behind the log head, and the age of the oldest of them."""
    return {
        name: {"events": lag.events, "seconds": lag.seconds}
        for name, lag in runtime.models.lag().items()
    }
