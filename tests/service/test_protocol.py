"""CoalescingProtocol: uvicorn's httptools protocol, each response in one socket write.

Driven directly (``data_received`` on a real uvicorn config and event loop) with a transport
that records every write: the byte stream must be exactly what plain ``HttpToolsProtocol``
sends (the differential oracle), in one write per response where uvicorn makes two.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ordonum.service.protocol import FLUSH_AT, READ_AT, CoalescingProtocol, CoalescingTransport
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"one", b"two"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"echo:" + body if body else b"hello"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def exchange(
    protocol_class: type[HttpToolsProtocol], chunks: list[bytes]
) -> RecordingTransport:
    """Feeds ``chunks`` to a fresh connection, letting the loop run after each, and returns
    the transport with what the protocol wrote."""
    config = Config(app=app, http=protocol_class, lifespan="off", log_level="warning")
    config.load()
    protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        for _ in range(20):
            await asyncio.sleep(0)
    protocol.connection_lost(None)
    for _ in range(5):
        await asyncio.sleep(0)
    return transport


GET = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"
POST = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nabcd"
HEAD = b"HEAD / HTTP/1.1\r\nhost: t\r\n\r\n"
EMPTY = b"GET /empty HTTP/1.1\r\nhost: t\r\n\r\n"
STREAM = b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n"
CONTINUE = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n"

CONVERSATIONS = {
    "keep-alive sequence": [GET, POST, GET],
    "pipelined": [GET + POST + GET],
    "HEAD": [HEAD, GET],
    "204": [EMPTY, GET],
    "streamed body": [STREAM, GET],
    "100-continue": [CONTINUE, b"abcd", GET],
    "bad request": [b"NOT HTTP\r\n\r\n"],
}


@pytest.mark.parametrize("chunks", CONVERSATIONS.values(), ids=CONVERSATIONS.keys())
def test_same_bytes_as_uvicorns_httptools_protocol(chunks: list[bytes]) -> None:
    ours = asyncio.run(exchange(CoalescingProtocol, chunks))
    theirs = asyncio.run(exchange(HttpToolsProtocol, chunks))
    assert b"".join(ours.writes) == b"".join(theirs.writes)
    assert b"".join(ours.writes).startswith(b"HTTP/1.1 ")
    assert ours.closed == theirs.closed


@pytest.mark.parametrize(
    ("chunks", "responses", "uvicorn_writes"),
    [([GET, POST, GET], 3, 6), ([GET + POST + GET], 3, 6), ([HEAD, GET], 2, 3)],
)
def test_one_write_per_response(chunks: list[bytes], responses: int, uvicorn_writes: int) -> None:
    theirs = asyncio.run(exchange(HttpToolsProtocol, chunks))
    ours = asyncio.run(exchange(CoalescingProtocol, chunks))
    # uvicorn alone: status line + headers, then the body (none for HEAD)
    assert len(theirs.writes) == uvicorn_writes
    assert len(ours.writes) == responses
    for write in ours.writes:  # each write is one whole response
        assert write.startswith(b"HTTP/1.1 ")


def test_streamed_chunks_are_not_held_past_the_loop_iteration() -> None:
    async def run() -> list[int]:
        config = Config(app=app, http=CoalescingProtocol, lifespan="off", log_level="warning")
        config.load()
        protocol = CoalescingProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(STREAM)
        seen = []
        for _ in range(10):  # the app yields once between chunks: each goes out on its own
            await asyncio.sleep(0)
            seen.append(len(transport.writes))
        return seen

    seen = asyncio.run(run())
    assert seen[-1] >= 3  # headers + "one" (held together at most), "two", the last chunk
    assert sorted(seen) == seen


def test_close_and_write_eof_flush_first() -> None:
    async def run() -> RecordingTransport:
        inner = RecordingTransport()
        outer = CoalescingTransport(inner, asyncio.get_running_loop())
        outer.write(b"a")
        outer.writelines([b"b", memoryview(b"c")])
        assert inner.writes == []
        assert outer.get_write_buffer_size() == 3
        outer.close()
        assert inner.writes == [b"abc"]
        assert inner.closed
        outer.write(b"late")
        await asyncio.sleep(0)  # the peer is gone: what is written after close is dropped
        return inner

    assert asyncio.run(run()).writes == [b"abc"]


def test_a_large_write_goes_out_at_once_and_resets_the_count() -> None:
    async def run() -> tuple[list[int], int]:
        inner = RecordingTransport()
        outer = CoalescingTransport(inner, asyncio.get_running_loop())
        outer.write(b"h" * 100)
        outer.write(b"b" * (FLUSH_AT - 100))  # reaches FLUSH_AT: both go out together now
        sizes = [len(w) for w in inner.writes]
        outer.write(b"tail")
        return sizes, outer.get_write_buffer_size()

    sizes, held = asyncio.run(run())
    assert sizes == [FLUSH_AT]
    assert held == 4


def test_each_request_is_stamped_with_the_loop_time_its_bytes_were_read() -> None:
    async def run() -> list[float]:
        seen: list[float] = []

        async def stamped(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(asyncio.get_running_loop().time() - scope[READ_AT])
            await app(scope, receive, send)

        config = Config(app=stamped, http=CoalescingProtocol, lifespan="off", log_level="warning")
        config.load()
        protocol = CoalescingProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        protocol.connection_made(RecordingTransport())
        protocol.data_received(GET + GET)  # pipelined: the second waits for the first
        await asyncio.sleep(0.05)
        protocol.data_received(GET)
        for _ in range(20):
            await asyncio.sleep(0)
        return seen

    seen = asyncio.run(run())
    assert len(seen) == 3
    assert all(0 <= waited < 0.04 for waited in seen), seen  # read then, not at connect
