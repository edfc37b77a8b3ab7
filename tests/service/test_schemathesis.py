"""schemathesis against the app's own OpenAPI schema: no 5xx, every response conforms
(status code documented, content type, body schema, headers). Bounded: a few dozen examples
per operation, each sent with a valid bearer token of the role the operation serves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from ordonum.service import Services
from ordonum.service import Settings as ServiceSettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Bearer, finess, nir, rpps


@pytest.fixture
def backend_kind() -> str:
    """The embedded store only: schemathesis drives the app from its own event loop, where a
    pool opened on the test's loop cannot go (the PostgreSQL backend answers the same
    shapes: test_pg_backend.py compares them)."""
    return "embedded"


@pytest.fixture
def services(settings: ServiceSettings) -> Iterator[Services]:
    svc = asyncio.run(Services.open(settings))
    yield svc
    asyncio.run(svc.close())


ROLE_BY_PATH = {
    "/v1/prescriptions": "prescriber",
    "/v1/scan": "pharmacist",
    "/v1/prescriptions/{id}/dispensations": "pharmacist",
    "/v1/prescriptions/{id}/cancel": "prescriber",
    "/v1/prescriptions/{id}/consent": "patient",
    "/v1/prescriptions/{id}/access-log": "patient",
    "/v1/me/prescriptions": "patient",
}


def test_openapi_documents_problems(app: FastAPI) -> None:
    doc = app.openapi()
    scan = doc["paths"]["/v1/scan"]["post"]["responses"]
    assert set(scan) >= {"200", "401", "404", "422", "429"}
    assert list(scan["404"]["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_api_conforms(app: FastAPI, bearer: Bearer) -> None:
    # Operations are walked here rather than with schemathesis' pytest parametrisation,
    # whose lazy fixture loader does not work with this pytest version.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            _call(case, bearer)

        check()


def _call(case: Any, bearer: Bearer) -> None:
    role = ROLE_BY_PATH.get(case.path, "patient")
    if case.method == "GET" and case.path == "/v1/prescriptions/{id}/dispensations":
        role = "prescriber"
    if role == "pharmacist":
        headers = bearer("pharmacist", finess(), rpps=rpps())
    elif role == "prescriber":
        headers = bearer("prescriber", rpps())
    else:
        headers = bearer("patient", nir())
    if case.headers:  # keep a generated Idempotency-Key, replace any generated Authorization
        case.headers.pop("Authorization", None)
    case.call_and_validate(
        headers=headers,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    )
