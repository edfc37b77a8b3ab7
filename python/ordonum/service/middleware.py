"""One pure ASGI middleware for every request, and the JSON log format.

Per request: take the caller's ``X-Request-ID`` if it is sane (else make one) and echo it on
the response; refuse bodies larger than ``max_body`` with 413 (on ``Content-Length`` before
reading, and while streaming for chunked bodies); time the request; count it in
:class:`~ordonum.service.metrics.Metrics` under its route template (``/v1/prescriptions/{id}``,
never the concrete path, so labels stay bounded); write one JSON log line.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task, no body buffering, a few µs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import re
import sys
import time
from typing import Any

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordonum.service.metrics import Metrics
from ordonum.service.problems import PROBLEM_MEDIA_TYPE, problem_body
from ordonum.service.protocol import READ_AT

__all__ = [
    "AccessLog",
    "JsonFormatter",
    "RequestIdSend",
    "RequestMiddleware",
    "configure_logging",
    "request_id",
]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
access = logging.getLogger("ordonum.access")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid != "-":
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """The per-request lines of logger ``ordonum.access``, without the logging module's
    per-record work.

    Through ``logging`` one line cost ~38 µs (LogRecord, formatter, handler lock, a flushed
    ``write`` each): 8 % of a request's CPU at the national mix. Here a line is one
    ``orjson.dumps`` into a list, and the list goes to ``sys.stderr`` in one write at most
    ``interval`` seconds later (scheduled on the running loop) and when the app stops. Same
    JSON fields as :class:`JsonFormatter`'s lines; emitted only while ``ordonum.access`` is
    enabled for INFO (``ORDONUM_LOG_LEVEL``). The price: a killed process loses the access
    lines of its last ``interval``.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._lines: list[bytes] = []
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def enabled(self) -> bool:
        return access.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        entry: dict[str, Any] = {
            # µs since the epoch, as a float: the digits of round(time.time(), 6), which took
            # 1.3 µs per line (a correctly rounded decimal conversion); this takes 0.2
            "ts": time.time_ns() // 1000 / 1e6,
            "level": "info",
            "logger": access.name,
            "msg": "request",
        }
        rid = request_id.get()
        if rid != "-":
            entry["request_id"] = rid
        entry.update(fields)
        self._lines.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))
        loop = asyncio.get_running_loop()
        if self._timer_loop is not loop:  # none yet, or on a loop that went away
            self._timer_loop = loop
            loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        self._timer_loop = None
        if self._lines:
            data = b"".join(self._lines).decode()
            self._lines.clear()
            sys.stderr.write(data)
            sys.stderr.flush()


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the root logger (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # ours is ordonum.access


def millis(seconds: float) -> float:
    """A duration (not negative) in ms, rounded half up to the µs: what ``round(seconds *
    1000, 3)`` gives but at an exact tie, in a fifth of its time."""
    return int(seconds * 1e6 + 0.5) / 1000


class RequestIdSend:
    """An ASGI ``send`` that adds ``X-Request-ID`` to the response start and remembers the
    status sent (500 until one is)."""

    __slots__ = ("rid", "send", "status")

    def __init__(self, send: Send, rid: bytes) -> None:
        self.send = send
        self.rid = rid
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", self.rid)]
        await self.send(message)


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit (FastAPI re-raises
    HTTP exceptions from body parsing, so the problem handler answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


#: Still served when overloaded: how the operator sees the overload.
NEVER_SHED = frozenset({"/healthz", "/metrics"})


class RequestMiddleware:
    """Request ID, body limit, metrics, access log; and load shedding: a request that
    waited more than ``max_queue`` seconds on the event loop between its headers being
    parsed (the server protocol's :data:`~ordonum.service.protocol.READ_AT`) and reaching
    here gets a 503 problem with ``Retry-After`` at once, without its work. Overloaded, the
    service so refuses in a fraction of a request's cost what it cannot serve in time,
    instead of answering everything later than the clients wait (they time out, retry, and
    the queue grows). ``max_queue`` 0: never shed; ``/healthz`` and ``/metrics`` never are.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body: int,
        access_log: AccessLog | None,
        max_queue: float = 0.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.access_log = access_log
        self.max_queue = max_queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, rid, length, token = self.open(scope)
        send_wrapper = RequestIdSend(send, rid)
        shed = self.overdue(scope)
        try:
            if not await self.refused(shed, length, send_wrapper):
                try:
                    await self.app(scope, self.limited(receive), send_wrapper)
                except _TooLarge:
                    await self.too_large(send_wrapper)
        finally:
            self.close(scope, shed, send_wrapper.status, start, token)

    def open(self, scope: Scope) -> tuple[float, bytes, int, contextvars.Token[str]]:
        """A request's start: ``(start time, request ID, Content-Length or -1, the request ID
        contextvar's token for :meth:`close`)``. The ID is the caller's ``X-Request-ID`` if it
        is sane, else a new one."""
        start = time.perf_counter()
        rid = b""
        length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _SANE_ID.match(value):
                    rid = value
            elif name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if not rid:
            rid = os.urandom(8).hex().encode()
        return start, rid, length, request_id.set(rid.decode())

    def close(
        self,
        scope: Scope,
        shed: bool,
        status: int,
        start: float,
        token: contextvars.Token[str],
        end: float | None = None,
    ) -> None:
        """A request's end (``end``: when its answer was written, if before now): counted in
        the metrics and logged under its route template."""
        elapsed = (time.perf_counter() if end is None else end) - start
        route = scope.get("route")
        # A shed request never reached the router: labelled apart, so the operator
        # tells the overload's 503s from requests for no route.
        template = "shed" if shed else (getattr(route, "path", None) or "unmatched")
        self.metrics.observe(scope["method"], template, status, elapsed)
        log = self.access_log
        if log is not None and log.enabled():
            log.write(
                {
                    "method": scope["method"],
                    "route": template,
                    "status": status,
                    "ms": millis(elapsed),
                }
            )
        request_id.reset(token)

    def limited(self, receive: Receive) -> Receive:
        """``receive``, raising a 413 once the body streamed passes ``max_body`` (a body
        announced larger by its Content-Length is refused before, without reading it)."""
        max_body = self.max_body
        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise _TooLarge(max_body)
            return message

        return receive_wrapper

    def overdue(self, scope: Scope) -> bool:
        """Whether this request waited more than ``max_queue`` on the loop: to be shed."""
        read_at = scope.get(READ_AT)
        return (
            read_at is not None
            and self.max_queue > 0
            and asyncio.get_running_loop().time() - read_at > self.max_queue
            and scope["path"] not in NEVER_SHED
        )

    async def refused(self, shed: bool, length: int, send: Send) -> bool:
        """Whether the request was answered at once, without its work: 503 when ``shed``
        (see :meth:`overdue`), 413 when its Content-Length is over ``max_body``."""
        if shed:
            await self.unavailable(send)
        elif length > self.max_body:
            await self.too_large(send)
        else:
            return False
        return True

    async def unavailable(self, send: Send) -> None:
        """The 503 problem of a shed request, with ``Retry-After``."""
        await _problem(
            send,
            503,
            f"overloaded: this request waited more than {self.max_queue * 1000:g} ms to be "
            "served; retry later",
            [(b"retry-after", b"1")],
        )

    async def too_large(self, send: Send) -> None:
        """The 413 problem of a body larger than ``max_body``."""
        await _problem(send, 413, f"request body larger than {self.max_body} bytes")


async def _problem(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with a problem document straight from the middleware (no app, no route)."""
    body = problem_body(status, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
