"""The hot routes' short ASGI stack (ordonum.service.fastroute.HotDispatch) answers exactly
like the whole FastAPI stack: the same requests, sent once through each (``otel=True`` keeps
the whole stack for every request), give the same statuses, problem documents, headers and
metrics labels."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from ordonum.service import Services, Settings, create_app
from ordonum.service.fastroute import HotDispatch, _Flat
from ordonum.service.protocol import READ_AT

from .conftest import Bearer, finess, nir, prescription_body, rpps

pytestmark = pytest.mark.anyio

_VOLATILE = re.compile(
    rb'"(id|token|access_code|dispensation_id|received_at|digest|signature|at|created_at|'
    rb'valid_until|qr_svg_url|qr_png_url)":"[^"]*"'
)


@pytest.fixture
def backend_kind() -> str:
    return "embedded"


def _apps(settings: Settings, services: Services) -> tuple[FastAPI, FastAPI]:
    hot = create_app(settings, services=services)
    whole = create_app(dataclasses.replace(settings, otel=True), services=services)
    return hot, whole


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ordonum.test") as c:
        yield c


async def _streamed(chunks: int, size: int) -> AsyncIterator[bytes]:
    """A body sent without Content-Length (chunked): the limit applies while reading it."""
    for _ in range(chunks):
        yield b"x" * size


async def _scenario(
    c: httpx.AsyncClient, doc: dict[str, str], ph: dict[str, str], body: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """Every kind of answer the hot routes give; volatile values masked."""
    ph_key = ph | {"Idempotency-Key": "k-1"}
    out: list[httpx.Response] = []
    created = await c.post("/v1/prescriptions", json=body, headers=doc)
    out.append(created)
    rx = created.json()
    url = f"/v1/prescriptions/{rx['id']}/dispensations"
    one = {"token": rx["token"], "lines": [{"line": 0, "quantity": 1}]}
    out += [
        await c.post("/v1/prescriptions", json={"patient": {}}, headers=doc),  # 422
        await c.post("/v1/prescriptions", json=body, headers=ph),  # 403
        await c.post("/v1/prescriptions", json=body),  # 401
        await c.post("/v1/scan", json={"token": rx["token"]}, headers=ph),  # 200
        await c.post("/v1/scan", json={"id": rx["id"], "access_code": "x"}, headers=ph),  # 404
        await c.post("/v1/scan", content=b"{", headers=ph | {"content-type": "application/json"}),
        await c.post("/v1/scan", content=b"x" * 70_000, headers=ph),  # 413
        await c.post("/v1/scan", content=_streamed(10, 7_000), headers=ph),  # 413, no length
        # 413: a Content-Length smaller than the body sent (the limit counts what arrives)
        await c.post("/v1/scan", content=b"x" * 70_000, headers=ph | {"content-length": "10"}),
        await c.get("/v1/scan", headers=ph),  # 405, whole stack in both apps
        await c.post(url, json=one, headers=ph_key),  # 201
        await c.post(url, json=one, headers=ph_key),  # replay
        await c.post(url, json=one | {"lines": [{"line": 0, "quantity": 999}]}, headers=ph_key),
        await c.post(url, json=one, headers=ph),  # 422: no Idempotency-Key
        await c.post("/v1/prescriptions/nope/dispensations", json=one, headers=ph_key),  # 404
        await c.get(url, headers=doc),  # the GET on the same path: a FastAPI route
    ]
    return [
        (
            r.request.method,
            r.request.url.path.replace(rx["id"], "{id}"),
            r.status_code,
            r.headers.get("content-type"),
            r.headers.get("x-request-id") == "req-1",
            r.headers.get("retry-after"),
            _VOLATILE.sub(rb'"\1":"~"', r.content),
        )
        for r in out
    ]


async def test_hot_and_whole_stacks_answer_alike(
    settings: Settings, services: Services, bearer: Bearer
) -> None:
    settings = dataclasses.replace(settings, max_body=65_536)
    hot, whole = _apps(settings, services)
    doc = bearer("prescriber", rpps())
    ph = bearer("pharmacist", finess(), rpps=rpps()) | {"X-Request-ID": "req-1"}
    body = prescription_body(nir())
    answers = []
    for app in (hot, whole):
        async for c in _client(app):
            answers.append(await _scenario(c, doc, ph, body))
            metrics = (await c.get("/metrics")).text
            assert 'route="/v1/prescriptions/{id}/dispensations"' in metrics
            assert 'route="/v1/scan"' in metrics
    assert isinstance(hot.middleware_stack, HotDispatch)
    assert isinstance(hot.middleware_stack.hot.app, _Flat)  # type: ignore[attr-defined]
    assert not isinstance(whole.middleware_stack, HotDispatch)
    statuses = [a[2] for a in answers[0]]
    expected = [201, 422, 403, 401, 200, 404, 422, 413, 413, 413, 405]
    expected += [201, 201, 409, 422, 404, 200]
    assert statuses == expected
    assert answers[0] == answers[1]


async def test_status_code_handlers_keep_the_generic_hot_stack(
    settings: Settings, services: Services
) -> None:
    # _Flat maps exceptions by class only, as the app's handlers are: a handler keyed by a
    # status code (Starlette looks those up first) keeps the generic stack, which has it.
    app = create_app(settings, services=services)

    async def teapot(_: Any, __: Exception) -> Any:
        raise AssertionError("not called here")

    app.add_exception_handler(418, teapot)
    stack = app.build_middleware_stack()
    assert isinstance(stack, HotDispatch)
    assert not isinstance(stack.hot.app, _Flat)  # type: ignore[attr-defined]


async def test_the_flat_hot_stack_sheds_like_the_middleware(
    settings: Settings, services: Services
) -> None:
    # A hot request that waited longer than max_queue on the loop: 503 problem with
    # Retry-After and its request ID, counted under "shed", without reaching the endpoint.
    app = create_app(dataclasses.replace(settings, max_queue_ms=5), services=services)
    stack = app.build_middleware_stack()
    assert isinstance(stack.hot.app, _Flat)  # type: ignore[attr-defined]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/scan",
        "root_path": "",
        "headers": [(b"x-request-id", b"req-shed")],
        READ_AT: asyncio.get_running_loop().time() - 1.0,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("a shed request's body is not read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await stack(scope, receive, send)
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"retry-after"] == b"1"
    assert headers[b"x-request-id"] == b"req-shed"
    assert b"overloaded" in body["body"]
    metrics = stack.hot.app.mw.metrics.render()  # type: ignore[attr-defined]
    assert 'route="shed",status="503"' in metrics
