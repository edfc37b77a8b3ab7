"""The access log: one JSON line per request, batched, same fields as the logging lines."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from ordonum.service.app import create_app
from ordonum.service.middleware import AccessLog, millis, request_id
from ordonum.service.settings import Settings
from ordonum.service.state import Services

pytestmark = pytest.mark.anyio


@pytest.fixture
def access_info() -> Iterator[None]:
    logger = logging.getLogger("ordonum.access")
    before = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(before)


async def test_lines_are_batched_and_written_whole(
    access_info: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AccessLog(interval=0.05)
    token = request_id.set("rid-1")
    try:
        for status in (200, 201, 404):
            log.write({"method": "POST", "route": "/v1/scan", "status": status, "ms": 1.5})
    finally:
        request_id.reset(token)
    assert capsys.readouterr().err == ""  # nothing yet: one write per interval
    await asyncio.sleep(0.15)
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["status"] for line in lines] == [200, 201, 404]
    first = json.loads(lines[0])
    assert set(first) == {
        "ts",
        "level",
        "logger",
        "msg",
        "request_id",
        "method",
        "route",
        "status",
        "ms",
    }
    assert (first["logger"], first["msg"], first["request_id"]) == (
        "ordonum.access",
        "request",
        "rid-1",
    )
    log.write({"method": "GET", "route": "/healthz", "status": 200, "ms": 0.1})
    log.flush()  # what the app's shutdown does
    assert json.loads(capsys.readouterr().err)["route"] == "/healthz"


def test_the_log_level_turns_it_off() -> None:
    logger = logging.getLogger("ordonum.access")
    before = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert not AccessLog().enabled()
        logger.setLevel(logging.INFO)
        assert AccessLog().enabled()
    finally:
        logger.setLevel(before)


@pytest.mark.parametrize("backend_kind", ["embedded"], indirect=True)
async def test_the_service_logs_each_request_with_its_template_and_id(
    access_info: None,
    settings: Settings,
    services: Services,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(dataclasses.replace(settings, access_log=True), services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ordonum.test") as c:
        await c.get("/healthz", headers={"X-Request-ID": "abc-123"})
        await c.get("/v1/prescriptions/1JPT-4J8T-0089-4000-F/access-log")
    await asyncio.sleep(0.15)
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    picked = [(e["route"], e["status"], e.get("request_id")) for e in entries]
    assert picked[0] == ("/healthz", 200, "abc-123")
    assert picked[1][:2] == ("/v1/prescriptions/{id}/access-log", 401)
    assert len(picked[1][2]) == 16  # generated


@pytest.mark.parametrize("seconds", [0.0, 1e-7, 0.0003124, 0.0123456, 0.0099996, 1.5, 12.3456789])
def test_millis_rounds_to_the_microsecond_like_round(seconds: float) -> None:
    assert millis(seconds) == round(seconds * 1000, 3)
