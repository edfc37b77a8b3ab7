"""Hot requests served straight from uvicorn's request cycle (``_Flat.serve``, chosen by
``CoalescingProtocol`` through the app's ``direct``) answer byte for byte like the ASGI call
of the same app through the same protocol (the differential oracle): the same status lines,
headers, problem documents, connection handling and metrics, over keep-alive, pipelining,
bodies split across reads, ``100 Continue``, ``Connection: close``, HTTP/1.0, chunked bodies,
bodies over the limit, shedding and an unmapped exception."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ordonum import StoreFailed
from ordonum.service import Services, Settings, create_app, fastroute
from ordonum.service.durable import Durability
from ordonum.service.fastroute import HotDispatch, _Flat
from ordonum.service.middleware import request_id
from ordonum.service.protocol import CoalescingProtocol
from starlette.responses import Response
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .conftest import Bearer, finess, nir, prescription_body, rpps
from .test_protocol import RecordingTransport

pytestmark = pytest.mark.anyio

_VOLATILE = re.compile(
    rb'"(id|token|access_code|dispensation_id|received_at|digest|signature|at|created_at|'
    rb'valid_until|qr_svg_url|qr_png_url)":"[^"]*"'
)
_LENGTH = re.compile(rb"content-length: \d+\r\n")
_MADE_ID = re.compile(rb"x-request-id: [0-9a-f]{16}\r\n")  # made when the caller sent none


class ViaAsgi(CoalescingProtocol):
    """The oracle: the same protocol, every request through the app's ASGI call."""

    _start_asgi_task = HttpToolsProtocol._start_asgi_task


@pytest.fixture
def backend_kind() -> str:
    return "embedded"


def _app(settings: Settings, services: Services) -> FastAPI:
    app = create_app(settings, services=services)
    app.middleware_stack = app.build_middleware_stack()  # what the lifespan's first call does
    return app


def _request(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", version: str = "1.1"
) -> bytes:
    head = [f"{method} {path} HTTP/{version}", "host: ordonum.test"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _json(method: str, path: str, headers: dict[str, str], doc: Any, **kw: Any) -> bytes:
    body = json.dumps(doc).encode()
    headers = headers | {"content-type": "application/json", "content-length": str(len(body))}
    return _request(method, path, headers, body, **kw)


def _chunked(path: str, headers: dict[str, str], body: bytes, size: int) -> bytes:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    )
    headers = headers | {"content-type": "application/json", "transfer-encoding": "chunked"}
    return _request("POST", path, headers, chunks + b"0\r\n\r\n")


async def _exchange(
    app: FastAPI,
    protocol_class: type[HttpToolsProtocol],
    chunks: list[bytes],
    stall: float = 0.0,
    hang_up: bool = False,
) -> tuple[bytes, bool]:
    """Feeds ``chunks`` to a fresh connection, letting the loop run after each (after
    ``stall`` seconds of a busy loop: the requests then waited that long to be served);
    returns what the protocol wrote and whether it closed the connection. ``hang_up``: the
    client goes away right after sending, before the loop runs."""
    # As `ordonum serve` runs it: no proxy-headers wrapper in front of the app.
    config = Config(
        app=app,
        http=protocol_class,
        lifespan="off",
        log_config=None,
        log_level="warning",
        proxy_headers=False,
    )
    config.load()
    state = ServerState()
    protocol = protocol_class(config, state, {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        if hang_up:
            protocol.connection_lost(None)
        time.sleep(stall)
        # Until every request is answered (durable writes wait for the journal), or a
        # moment for one whose body is still to come.
        deadline = time.monotonic() + 0.3
        await asyncio.sleep(0)
        while state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
    closed = transport.closed  # by the server (the client's hang-up below closes it too)
    if not hang_up:
        protocol.connection_lost(None)
    for _ in range(5):
        await asyncio.sleep(0)
    return b"".join(transport.writes), closed


def _masked(exchanged: tuple[bytes, bool]) -> tuple[bytes, bool]:
    # IDs, tokens and times differ between the two prescriptions; so do the lengths of the
    # documents that carry them.
    data, closed = exchanged
    data = _VOLATILE.sub(rb'"\1":"~"', data)
    data = _MADE_ID.sub(b"x-request-id: ~\r\n", data)
    return _LENGTH.sub(b"content-length: ~\r\n", data), closed


Conversation = Callable[[dict[str, Any]], list[bytes]]


def _conversations(ph: dict[str, str], doc: dict[str, str]) -> dict[str, Conversation]:
    """Each conversation, for one prescription ``rx`` (its ``id``, ``token``, ``code``)."""

    def scan_token(rx: dict[str, Any], rid: str = "r1", **kw: Any) -> bytes:
        return _json("POST", "/v1/scan", ph | {"x-request-id": rid}, {"token": rx["token"]}, **kw)

    def scan_code(rx: dict[str, Any], code: str, rid: str) -> bytes:
        doc_ = {"id": rx["id"], "access_code": code}
        return _json("POST", "/v1/scan", ph | {"x-request-id": rid}, doc_)

    def dispense(rx: dict[str, Any], key: str, quantity: int, rid: str) -> bytes:
        doc_ = {"token": rx["token"], "lines": [{"line": 0, "quantity": quantity}]}
        headers = ph | {"x-request-id": rid, "idempotency-key": key}
        return _json("POST", f"/v1/prescriptions/{rx['id']}/dispensations", headers, doc_)

    big = json.dumps({"token": "x" * 70_000}).encode()
    return {
        "keep-alive: hits, misses, errors, dispensations": lambda rx: [
            scan_token(rx),
            scan_code(rx, rx["access_code"], "r2"),
            scan_code(rx, "WRONG-CODE", "r3"),  # 404, the same bytes as any miss
            _json("POST", "/v1/scan", ph | {"x-request-id": "r4"}, {"nope": 1}),  # 422
            _request("POST", "/v1/scan", ph | {"content-length": "1"}, b"{"),  # 422
            _json("POST", "/v1/scan", {"x-request-id": "r5"}, {"token": rx["token"]}),  # 401
            _json("POST", "/v1/scan", doc | {"x-request-id": "r6"}, {"token": rx["token"]}),
            dispense(rx, "k1", 1, "r7"),  # 201
            dispense(rx, "k1", 1, "r8"),  # the replay: the same answer
            dispense(rx, "k2", 999, "r9"),  # 409
            _json("POST", "/v1/prescriptions/nope/dispensations", ph, {"lines": []}),
            _json("GET", "/v1/scan", ph, {}),  # 405: the ASGI call in both
        ],
        "pipelined": lambda rx: [
            scan_token(rx, "p1") + dispense(rx, "k1", 1, "p2") + scan_code(rx, "bad", "p3"),
            dispense(rx, "k2", 1, "p4") + dispense(rx, "k2", 1, "p5") + scan_token(rx),
        ],
        "body split across reads": lambda rx: [
            (request := scan_token(rx))[:-20],
            request[-20:],
            scan_token(rx, "after"),
        ],
        "100-continue": lambda rx: [
            (
                request := _json("POST", "/v1/scan", ph | {"expect": "100-continue"}, rx_token(rx))
            ).partition(b"\r\n\r\n")[0]
            + b"\r\n\r\n",
            request.partition(b"\r\n\r\n")[2],
            scan_token(rx, "after"),
        ],
        "100-continue, the body in the same read": lambda rx: [
            _json("POST", "/v1/scan", ph | {"expect": "100-continue"}, rx_token(rx)),
            scan_token(rx, "after"),
        ],
        "connection: close": lambda rx: [
            _json("POST", "/v1/scan", ph | {"connection": "close"}, rx_token(rx)),
        ],
        "HTTP/1.0": lambda rx: [scan_token(rx, version="1.0")],
        "chunked body": lambda rx: [
            _chunked("/v1/scan", ph, json.dumps(rx_token(rx)).encode(), 50),
            scan_token(rx, "after"),
        ],
        "declared body over the limit": lambda rx: [
            _request("POST", "/v1/scan", ph | {"content-length": str(len(big))}, big),
            scan_token(rx, "after"),
        ],
        "chunked body over the limit": lambda rx: [_chunked("/v1/scan", ph, big, 8_000)],
    }


def rx_token(rx: dict[str, Any]) -> dict[str, str]:
    return {"token": rx["token"]}


def _runs(
    direct: FastAPI, via_asgi: FastAPI, ours: dict[str, Any], theirs: dict[str, Any]
) -> tuple[tuple[FastAPI, type[HttpToolsProtocol], dict[str, Any]], ...]:
    """Each app with its protocol (the lane, the oracle) and its prescription."""
    return ((direct, CoalescingProtocol, ours), (via_asgi, ViaAsgi, theirs))


def _dispense_one(rx: dict[str, Any], headers: dict[str, str]) -> bytes:
    """A dispensation of one pack of line 0, proved by the token."""
    body = {"token": rx["token"], "lines": [{"line": 0, "quantity": 1}]}
    return _json("POST", f"/v1/prescriptions/{rx['id']}/dispensations", headers, body)


async def _two_prescriptions(app: FastAPI, doc: dict[str, str]) -> list[dict[str, Any]]:
    body = prescription_body(nir())
    out = []
    for _ in range(2):
        created, _ = await _exchange(app, ViaAsgi, [_json("POST", "/v1/prescriptions", doc, body)])
        out.append(json.loads(created.partition(b"\r\n\r\n")[2]))
    return out


@pytest.fixture
def people(bearer: Bearer) -> tuple[dict[str, str], dict[str, str]]:
    ph = bearer("pharmacist", finess(), rpps=rpps())
    doc = bearer("prescriber", rpps())
    return {k.lower(): v for k, v in ph.items()}, {k.lower(): v for k, v in doc.items()}


@pytest.mark.parametrize(
    "name",
    [
        "keep-alive: hits, misses, errors, dispensations",
        "pipelined",
        "body split across reads",
        "100-continue",
        "100-continue, the body in the same read",
        "connection: close",
        "HTTP/1.0",
        "chunked body",
        "declared body over the limit",
        "chunked body over the limit",
    ],
)
async def test_served_from_the_cycle_as_through_the_app(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ph, doc = people
    settings = dataclasses.replace(settings, max_body=65_536)
    direct, via_asgi = _app(settings, services), _app(settings, services)
    ours, theirs = await _two_prescriptions(direct, doc)
    served = []
    serve = _Flat.serve

    async def spy(self: _Flat, cycle: Any) -> None:
        served.append(cycle.scope["path"])
        await serve(self, cycle)

    monkeypatch.setattr(_Flat, "serve", spy)
    talk = _conversations(ph, doc)[name]
    got = _masked(await _exchange(direct, CoalescingProtocol, talk(ours)))
    served_directly = len(served)
    want = _masked(await _exchange(via_asgi, ViaAsgi, talk(theirs)))
    assert len(served) == served_directly  # the oracle never takes the lane
    assert served_directly > 0
    assert got == want
    assert got[0].startswith(b"HTTP/1.1 ")
    assert got[1] == (name in ("connection: close", "HTTP/1.0"))  # closed by the server
    counts = []
    for app in (direct, via_asgi):
        stack = app.middleware_stack
        assert isinstance(stack, HotDispatch)
        assert stack.flat is not None
        counts.append(stack.flat.mw.metrics._counts)
    # The creations went through the ASGI call of `direct` only.
    counts[0] = {k: v for k, v in counts[0].items() if k[1] != "/v1/prescriptions"}
    assert counts[0] == counts[1]


async def test_a_request_that_waited_too_long_is_shed_from_the_cycle(
    settings: Settings, services: Services, people: tuple[dict[str, str], dict[str, str]]
) -> None:
    ph, doc = people
    settings = dataclasses.replace(settings, max_queue_ms=5)
    answers = []
    for protocol_class in (CoalescingProtocol, ViaAsgi):
        app = _app(settings, services)
        (rx, _) = await _two_prescriptions(app, doc)
        talk = [_json("POST", "/v1/scan", ph | {"x-request-id": "late"}, rx_token(rx))]
        answers.append(_masked(await _exchange(app, protocol_class, talk, stall=0.02)))
        metrics = app.middleware_stack.flat.mw.metrics.render()  # type: ignore[union-attr]
        assert 'route="shed",status="503"' in metrics
    assert answers[0] == answers[1]
    assert answers[0][0].startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1\r\n" in answers[0][0]
    assert b"x-request-id: late\r\n" in answers[0][0]


async def test_an_unmapped_exception_answers_500_and_closes_as_through_the_app(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ph, doc = people
    direct, via_asgi = _app(settings, services), _app(settings, services)
    ours, theirs = await _two_prescriptions(direct, doc)

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the backend broke")

    monkeypatch.setattr(services.backend, "scan", broken)
    answers = []
    for app, protocol_class, rx in _runs(direct, via_asgi, ours, theirs):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            talk = [_json("POST", "/v1/scan", ph, rx_token(rx)), _json("POST", "/v1/scan", ph, {})]
            answers.append(_masked(await _exchange(app, protocol_class, talk)))
        assert "Exception in ASGI application" in caplog.text
        metrics = app.middleware_stack.flat.mw.metrics.render()  # type: ignore[union-attr]
        assert 'method="POST",route="/v1/scan",status="500"' in metrics
    assert answers[0] == answers[1]
    data, closed = answers[0]
    assert data.startswith(b"HTTP/1.1 500 ")
    assert data.count(b"HTTP/1.1 ") == 1  # closed: the second request is never served
    assert closed


async def test_a_client_gone_before_its_request_runs_changes_nothing(
    settings: Settings, services: Services, people: tuple[dict[str, str], dict[str, str]]
) -> None:
    # The body is in, but the connection is lost before the request's task runs: the body
    # is then read through receive (a disconnect), and nothing is written, as via the app.
    ph, doc = people
    direct, via_asgi = _app(settings, services), _app(settings, services)
    ours, theirs = await _two_prescriptions(direct, doc)
    for app, protocol_class, rx in _runs(direct, via_asgi, ours, theirs):
        talk = [_dispense_one(rx, ph | {"idempotency-key": "gone"})]
        data, _ = await _exchange(app, protocol_class, talk, hang_up=True)
        assert data == b""
        kept = json.loads(await services.backend.dispensations(rx["id"]))
        assert kept["dispensations"] == []


def _odd(kind: str) -> Callable[[Any], Any]:
    """Endpoints answering what the hot routes never do, for the paths around the one write."""

    async def endpoint(_: Any) -> Any:
        if kind == "invalid header":
            return Response(b"ok", headers={"x-bad": "a\nb"})
        if kind == "content-length not the body's":
            return Response(b"abc", headers={"content-length": "10"})
        if kind == "JSONResponse":
            return JSONResponse({"a": 1}, headers={"connection": "close"})
        if kind == "no response":
            return None
        raise RuntimeError("the endpoint broke")  # and the 500 handler breaks too

    return endpoint


@pytest.mark.parametrize(
    "kind",
    ["invalid header", "content-length not the body's", "JSONResponse", "no response", "crash"],
)
async def test_odd_answers_are_sent_as_through_the_app(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ph, _ = people
    answers = []
    for protocol_class in (CoalescingProtocol, ViaAsgi):
        app = _app(settings, services)
        stack = app.middleware_stack
        assert isinstance(stack, HotDispatch)
        assert stack.flat is not None
        for route in stack.routes:
            route.endpoint = _odd(kind)  # type: ignore[attr-defined]
        if kind == "crash":

            async def broken_handler(*_: Any) -> Any:
                raise RuntimeError("the 500 handler broke")

            stack.flat.error_handler = broken_handler
            stack.hot.handler = broken_handler  # type: ignore[attr-defined]
        talk = [
            _json("POST", "/v1/scan", ph | {"x-request-id": "odd"}, {}),
            _json("GET", "/", {}, {}),
        ]
        with caplog.at_level(logging.ERROR):
            answers.append(await _exchange(app, protocol_class, talk))
    assert answers[0] == answers[1]
    data, closed = answers[0]
    if kind in ("invalid header", "content-length not the body's"):
        assert closed  # the error comes with or after the status line: the connection goes
    if kind in ("no response", "crash"):
        assert data.startswith(b"HTTP/1.1 500 ")
        assert b"Internal Server Error" in data


async def test_durable_answers_are_written_from_the_journals_wake_up(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lane writes a creation's or a dispensation's answer when the waiter settles it
    # (the wake-up's read or a poll; at once if durable already), never before its write
    # is durable, and not through the request's task (which writes the scan's).
    ph, doc = people
    app = _app(settings, services)
    rx, _ = await _two_prescriptions(app, doc)
    store = services.backend.store  # type: ignore[attr-defined]
    lsns: list[int] = []
    by_waiter: list[tuple[int, bool]] = []
    by_task: list[int] = []
    contexts: list[str] = []
    init, write_now, write = Durability.__init__, fastroute._write_now, fastroute._write

    def spy_init(self: Durability, waiter: Any, lsn: int) -> None:
        lsns.append(lsn)
        init(self, waiter, lsn)

    def spy_write_now(cycle: Any, response: Any, rid: bytes) -> None:
        if response.status_code == 201:  # the k-th durable answer: the k-th LSN handed out
            by_waiter.append((response.status_code, store.durable_lsn() >= lsns[len(by_waiter)]))
            contexts.append(request_id.get())  # its own request's, whoever settled it
        write_now(cycle, response, rid)

    async def spy_write(cycle: Any, response: Any, rid: bytes) -> None:
        by_task.append(response.status_code)
        await write(cycle, response, rid)

    monkeypatch.setattr(Durability, "__init__", spy_init)
    monkeypatch.setattr(fastroute, "_write_now", spy_write_now)
    monkeypatch.setattr(fastroute, "_write", spy_write)
    talk = [
        _dispense_one(rx, ph | {"idempotency-key": "w", "x-request-id": "one"}),
        _json("POST", "/v1/prescriptions", doc | {"x-request-id": "two"}, prescription_body(nir())),
        _json("POST", "/v1/scan", ph, rx_token(rx)),
    ]
    data, _ = await _exchange(app, CoalescingProtocol, talk)
    assert data.count(b"HTTP/1.1 201 ") == 2
    assert len(lsns) == 2
    assert by_waiter == [(201, True), (201, True)]
    assert contexts == ["one", "two"]
    assert by_task == [200]


async def test_a_request_cancelled_once_answered_ends_as_answered(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A shutdown's timeout may cancel a request's task after its answer was written from
    # the wake-up: the connection stays up and the request counts as answered (201).
    ph, doc = people
    app = _app(settings, services)
    rx, _ = await _two_prescriptions(app, doc)
    tasks: list[asyncio.Task[Any]] = []
    serve, write_now = _Flat.serve, fastroute._write_now

    async def spy_serve(self: _Flat, cycle: Any) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        await serve(self, cycle)

    def cancelling_write(cycle: Any, response: Any, rid: bytes) -> None:
        write_now(cycle, response, rid)
        for task in tasks:  # right after this callback, before the task is resumed
            asyncio.get_running_loop().call_soon(task.cancel)

    monkeypatch.setattr(_Flat, "serve", spy_serve)
    monkeypatch.setattr(fastroute, "_write_now", cancelling_write)
    talk = [_dispense_one(rx, ph | {"idempotency-key": "c"}), _json("POST", "/v1/scan", ph, {})]
    with caplog.at_level(logging.ERROR):
        data, closed = await _exchange(app, CoalescingProtocol, talk)
    assert data.startswith(b"HTTP/1.1 201 ")
    assert not closed
    assert "Exception in ASGI application" not in caplog.text
    metrics = app.middleware_stack.flat.mw.metrics.render()  # type: ignore[union-attr]
    assert 'route="/v1/prescriptions/{id}/dispensations",status="201"' in metrics


async def test_a_journal_failure_answers_503_as_through_the_app(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ph, doc = people
    direct, via_asgi = _app(settings, services), _app(settings, services)
    ours, theirs = await _two_prescriptions(direct, doc)
    failure = StoreFailed("journal fdatasync failed: No space left on device")

    async def wait(_: Durability) -> None:
        raise failure

    monkeypatch.setattr(Durability, "then", lambda _, callback: callback(failure))
    monkeypatch.setattr(Durability, "wait", wait)
    answers = []
    for app, protocol_class, rx in _runs(direct, via_asgi, ours, theirs):
        create = prescription_body(nir())
        talk = [
            _dispense_one(rx, ph | {"idempotency-key": "f", "x-request-id": "f"}),
            _json("POST", "/v1/prescriptions", doc | {"x-request-id": "c"}, create),
        ]
        answers.append(_masked(await _exchange(app, protocol_class, talk)))
    assert answers[0] == answers[1]
    assert answers[0][0].count(b"HTTP/1.1 503 ") == 2


async def test_access_log_lines_as_through_the_app(
    settings: Settings,
    services: Services,
    people: tuple[dict[str, str], dict[str, str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ph, doc = people
    settings = dataclasses.replace(settings, access_log=True)
    direct, via_asgi = _app(settings, services), _app(settings, services)
    ours, theirs = await _two_prescriptions(direct, doc)
    seen = []
    for app, protocol_class, rx in _runs(direct, via_asgi, ours, theirs):
        stack = app.middleware_stack
        assert isinstance(stack, HotDispatch)
        assert stack.flat is not None
        log = stack.flat.mw.access_log
        assert log is not None
        talk = [
            _json("POST", "/v1/scan", ph | {"x-request-id": "a1"}, rx_token(rx)),
            _dispense_one(rx, ph | {"idempotency-key": "a", "x-request-id": "a2"}),
            _json("POST", "/v1/scan", ph | {"x-request-id": "a3"}, {"token": "forged"}),
        ]
        with caplog.at_level(logging.INFO, logger="ordonum.access"):
            log._lines.clear()  # the creations' lines
            await _exchange(app, protocol_class, talk)
            entries = [json.loads(line) for line in log._lines]
        assert all(e["ms"] >= 0 and e["logger"] == "ordonum.access" for e in entries)
        seen.append([(e["request_id"], e["method"], e["route"], e["status"]) for e in entries])
    assert seen[0] == seen[1]
    assert seen[0] == [
        ("a1", "POST", "/v1/scan", 200),
        ("a2", "POST", "/v1/prescriptions/{id}/dispensations", 201),
        ("a3", "POST", "/v1/scan", 404),
    ]
