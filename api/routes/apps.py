"""Apps (tenants), as OneSignal's `POST /apps` and `GET /apps/{app_id}`, with the
organization key; plus REST API key rotation."""

from __future__ import annotations

from uuid import UUID, uuid4

from fastapi import APIRouter

from idledger.api import examples as ex
from idledger.api.deps import Admin, RuntimeDep
from idledger.api.lookup import segment
from idledger.api.openapi_docs import errors, merge
from idledger.api.schemas import AppIn, AppOut
from idledger.domain.app import App
from idledger.domain.errors import AppNotFound

router = APIRouter(prefix="/apps", tags=["apps"])
ADMIN = (ex.ORGANIZATION_KEY_REFUSED, ex.STORE_DOWN)


def app_out(app: App, api_key: str | None = None) -> AppOut:
    return AppOut(
        id=str(app.id),
        name=app.name,
        created_at=app.created_on.isoformat(),
        updated_at=app.modified_on.isoformat(),
        basic_auth_key=api_key,
    )


def app_uuid(app_id: str) -> UUID:
    try:
        return UUID(segment(app_id))
    except ValueError:
        raise AppNotFound(app_id) from None


@router.post(
    "",
    response_model=AppOut,
    response_model_exclude_none=True,
    responses=merge({200: ex.APP_WITH_KEY}, errors(*ADMIN, ex.INVALID_FIELD, ex.TOO_LARGE)),
    openapi_extra=ex.CREATE_APP,
)
def create_app(body: AppIn, _: Admin, runtime: RuntimeDep) -> AppOut:
    """A new app; its REST API key is shown here once, in ``basic_auth_key``."""
    app_id = uuid4()  # first: it chooses the app's partition
    home = runtime.partitions.for_new_app(app_id) if runtime.partitions else runtime
    created = home.ledger.create_app(body.name, app_id)
    return app_out(home.ledger.get_app(created.app_id), created.api_key)


@router.get(
    "/{app_id}",
    response_model=AppOut,
    response_model_exclude_none=True,
    responses=merge({200: ex.APP_FOUND}, errors(*ADMIN, ex.INVALID_SEGMENT, ex.APP_NOT_FOUND)),
)
def get_app(app_id: str, _: Admin, runtime: RuntimeDep) -> AppOut:
    return app_out(runtime.ledger.get_app(app_uuid(app_id)))


@router.post(
    "/{app_id}/api_key",
    response_model=AppOut,
    response_model_exclude_none=True,
    responses=merge(
        {200: ex.APP_WITH_KEY},
        errors(*ADMIN, ex.INVALID_SEGMENT, ex.APP_NOT_FOUND, ex.RACES_LOST),
    ),
)
def rotate_api_key(app_id: str, _: Admin, runtime: RuntimeDep) -> AppOut:
    """A new REST API key; the previous one is refused from now on."""
    rotated = runtime.ledger.rotate_api_key(app_uuid(app_id))
    runtime.forget_app(rotated.app_id)
    return app_out(runtime.ledger.get_app(rotated.app_id), rotated.api_key)
