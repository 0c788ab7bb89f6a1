"""Liveness, readiness, projection lag and dead letters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from idledger.api import examples as ex
from idledger.api.deps import RuntimeDep
from idledger.api.errors import RETRY_AFTER_SECONDS
from idledger.api.openapi_docs import errors
from idledger.api.runtime import Runtime
from idledger.projections.dead_letters import describe, is_store_failure

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


def readiness(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/ready`` (the console's health strip shows the same)."""
    if not runtime.gate.is_open:
        return _not_ready([f"event store unreachable: {runtime.gate.reason}"])
    try:
        head = runtime.ledger.recorder.max_notification_id() or 0
        dead_letters = runtime.models.dead_letters()
    except Exception as error:  # the store is down: say so, do not 500
        if is_store_failure(error):
            runtime.gate.trip(error)
        return _not_ready([f"event store unreachable: {describe(error)}"])
    problems = []
    projector = runtime.projector
    if projector is not None and projector.error is not None:
        problems.append(f"projector interrupted: {describe(projector.error)}")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "degraded",
        "log_head": head,
        "dead_letters": dead_letters,
        "problems": problems,
    }
    if runtime.replicas is not None:  # a standby down or behind is skipped, not a problem
        body["read_replicas"] = runtime.replicas.status()
    return (200, body) if not problems else _not_ready(problems, body)


def _not_ready(
    problems: list[str], body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    return 503, body or {"status": "unavailable", "problems": problems}


@router.get("/lag", responses={200: ex.LAG, **errors(ex.STORE_DOWN)})
def lag(runtime: RuntimeDep) -> dict[str, dict[str, int | float]]:
    """Per read model: events behind the log head, the age of the oldest of them,
    and the events set aside as dead letters (`idledger dead-letters` lists them)."""
    return lag_report(runtime)


def lag_report(runtime: Runtime) -> dict[str, dict[str, int | float]]:
    """The body of ``/lag`` (the console's health strip shows the same)."""
    dead_letters = runtime.models.dead_letters()
    return {
        name: {"events": lag.events, "seconds": lag.seconds, "dead_letters": dead_letters[name]}
        for name, lag in runtime.models.lag().items()
    }
