"""Load shedding: a request that waited too long on the event loop gets 503 at once.

The server protocol stamps each request with the loop time its first bytes were parsed
(``READ_AT``); ``RequestMiddleware`` compares it with the time the request reaches the app.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from ordonum.service.metrics import Metrics
from ordonum.service.middleware import RequestMiddleware
from ordonum.service.protocol import READ_AT


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


async def call(
    path: str, waited: float | None, max_queue: float
) -> tuple[int, dict[bytes, bytes], bytes]:
    metrics = Metrics()
    app = RequestMiddleware(
        inner, metrics=metrics, max_body=1000, access_log=None, max_queue=max_queue
    )
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": path, "headers": []}
    if waited is not None:
        scope[READ_AT] = asyncio.get_running_loop().time() - waited
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent
    # counted like any answer; a shed one under its own label, not "unmatched"
    route = "shed" if start["status"] == 503 else "unmatched"
    assert f'route="{route}",status="{start["status"]}"' in metrics.render()
    return start["status"], dict(start["headers"]), body["body"]


def run(*args: Any) -> tuple[int, dict[bytes, bytes], bytes]:
    return asyncio.run(call(*args))


def test_a_request_that_waited_longer_than_the_limit_gets_503_with_retry_after() -> None:
    status, headers, body = run("/v1/scan", 1.5, 1.0)
    assert status == 503
    assert headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/problem+json"
    assert b"x-request-id" in headers
    problem = orjson.loads(body)
    assert problem["status"] == 503
    assert problem["detail"] == (
        "overloaded: this request waited more than 1000 ms to be served; retry later"
    )


@pytest.mark.parametrize(
    ("path", "waited", "max_queue"),
    [
        ("/v1/scan", 0.2, 1.0),  # within the limit
        ("/v1/scan", 5.0, 0.0),  # shedding off
        ("/v1/scan", None, 1.0),  # no stamp (another server, the in-process test client)
        ("/healthz", 5.0, 1.0),  # never shed: how the operator sees the overload
        ("/metrics", 5.0, 1.0),
    ],
)
def test_served(path: str, waited: float | None, max_queue: float) -> None:
    status, _, body = run(path, waited, max_queue)
    assert (status, body) == (200, b"served")


def test_a_declared_body_over_the_limit_is_a_413_problem_without_reaching_the_app() -> None:
    async def go() -> list[dict[str, Any]]:
        app = RequestMiddleware(inner, metrics=Metrics(), max_body=1000, access_log=None)
        scope = {"type": "http", "method": "POST", "path": "/v1/scan"}
        scope["headers"] = [(b"content-length", b"1001")]
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, None, send)  # type: ignore[arg-type]
        return sent

    start, body = asyncio.run(go())
    assert start["status"] == 413
    assert orjson.loads(body["body"])["detail"] == "request body larger than 1000 bytes"
