"""uvicorn's httptools protocol, with each response handed to the socket in one write.

uvicorn writes a response in two ``transport.write`` calls: the status line and headers on
``http.response.start``, then the body on ``http.response.body``. uvloop sends each at once:
two ``send`` system calls, two TCP segments, and on the client two wake-ups for one answer.
Over loopback the sender's ``send`` also runs the receiver's TCP input. At the national burst
(~1,600 responses/s on one core, py-spy) the two writes were ~7.5 % of the server's samples;
the one write is ~6 %, and the client wakes once per answer.

:class:`CoalescingProtocol` gives uvicorn a transport that holds what is written until the
response is complete (uvicorn then calls ``on_response_complete``), and writes it in one
call. Whatever is still held at the end of the current event loop iteration goes out then
(a streamed body's chunks, a ``100 Continue``, an error answer before close): nothing waits
longer than one iteration, and the order of bytes on the connection never changes.

It also stamps each request's scope with the loop time its headers were parsed
(:data:`READ_AT`): under overload, requests queue on the event loop, and the app sheds
those that waited too long (see ``RequestMiddleware``).

And it lets the app serve a request from uvicorn's request cycle instead of through its ASGI
call: before starting a request's task, the protocol asks the app's ``direct(scope)`` (if it
has one, and is not wrapped); an answer is a coroutine function that serves the
``RequestResponseCycle`` itself (the body already read, the response written in one call),
``None`` keeps the ASGI call. uvicorn's parsing, keep-alive, pipelining, flow control and
``100 Continue`` stay uvicorn's. The app's hot routes answer this way (see
``ordonum.service.fastroute._Flat.serve``): measured in process through this protocol (typed-ID
scans, alternating blocks of 2,000, medians), 161 µs per request against 202 through the ASGI
call. This relies on uvicorn's ``_start_asgi_task`` (uvicorn 0.54): an uvicorn without it
never asks, and every request takes the ASGI call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["FLUSH_AT", "READ_AT", "CoalescingProtocol", "CoalescingTransport"]

READ_AT = "ordonum.read_at"
"""Scope key: the event loop's time (``loop.time()``) when the request's headers were parsed.
The app tells from it how long the request waited for the loop (overload); a pipelined
request also counts the time the requests before it on its connection took."""

FLUSH_AT = 64 * 1024
"""Held bytes past which a write goes out at once (a large or streamed body)."""


class CoalescingTransport:
    """Forwards everything to ``transport`` but holds writes until :meth:`flush`, which the
    protocol calls at the end of each response, and which is scheduled on the loop at the
    first held write (so nothing is held past the current iteration)."""

    __slots__ = ("_held", "_loop", "_scheduled", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:  # a large or streamed body: uvicorn's flow control decides
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand everything held to the real transport, in one write."""
        held = self._held
        if held:
            data = held[0] if len(held) == 1 else b"".join(held)
            held.clear()
            self._size = 0
            if not self.transport.is_closing():  # the peer went away: nobody to send it to
                self.transport.write(data)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def write_now(self, data: bytes) -> None:
        """Write ``data`` at once: straight to the transport if nothing is held (no flush to
        schedule), else after what is held, in one write."""
        if self._held:
            self._held.append(data)
            self.flush()
        elif not self.transport.is_closing():
            self.transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._size = 0
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self.transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:  # is_closing, pause_reading, get_extra_info...
        return getattr(self.transport, name)


class CoalescingProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` (uvloop + httptools, as before) writing each response in
    one ``send``; pass it as uvicorn's ``http``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        # Headers parsed, not first bytes: a slow client's upload is not the loop's queue.
        self.scope[READ_AT] = self.loop.time()  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # The app itself (not wrapped by uvicorn, not the overload answer) may serve the
        # request from the cycle (see the module's docstring); uvicorn still starts and
        # tracks the task (its context, its set of tasks), calling ``run_asgi`` on what it
        # is given.
        direct = getattr(app, "direct", None) if app is self.app else None
        serve = direct(cycle.scope) if direct is not None else None
        if serve is not None:
            cycle = _Served(cycle, serve)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)


class _Served:
    """A request cycle whose ``run_asgi`` is the app's ``serve(cycle)``, not the ASGI call."""

    __slots__ = ("cycle", "serve")

    def __init__(
        self, cycle: RequestResponseCycle, serve: Callable[[RequestResponseCycle], Awaitable[None]]
    ) -> None:
        self.cycle = cycle
        self.serve = serve

    def run_asgi(self, _: ASGI3Application) -> Awaitable[None]:
        return self.serve(self.cycle)
