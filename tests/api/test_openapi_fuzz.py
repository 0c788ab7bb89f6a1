"""A schema-driven fuzzer (schemathesis) against the OpenAPI document: no
server errors, and no status code or content type the document does not name."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.api.conftest import Tenant

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
]


def test_every_answer_is_documented(client: TestClient, tenant: Tenant) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    schema.config.update(parameters={"path.app_id": tenant.app_id}, headers=tenant.headers)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself must be valid
        operations.append(result.ok())
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=CHECKS)

        fuzz()
