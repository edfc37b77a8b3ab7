"""Hot routes served by plain Starlette routes, documented in OpenAPI from the same models.

Measured (profiled in process, this machine): on ``POST /v1/scan`` FastAPI's dependency and
body machinery (``solve_dependencies``, body to dict to model, response checks) cost more than
everything ordonum does, store lookup included. The two hot routes (scan, record a
dispensation) therefore run as Starlette ``Route`` endpoints inside the same app: same
middleware, same exception handlers, same problem documents. What FastAPI would have done
is done here explicitly and no less strictly:

- the body is validated straight from bytes by a pydantic ``TypeAdapter`` (``validate_json``,
  in Rust; unknown fields refused by the models' ``extra="forbid"``); a failure raises
  FastAPI's own ``RequestValidationError`` with ``body.``-prefixed locations, so the 422
  problem looks exactly like the other routes';
- authentication is the same :func:`~ordonum.service.deps.authenticate`;
- the OpenAPI operation (body schema, response schema, parameters, problem responses) is
  generated from the same pydantic models by :func:`document`.

They also skip most of the ASGI stack in front of the router (:class:`HotDispatch`):
measured in process on ``POST /v1/scan``, the layers between the app and the route (FastAPI's
telemetry and body-limit wrappers, its ``AsyncExitStack`` middleware, the router's walk)
cost more than the scan itself. A request for a hot route goes through
``ServerErrorMiddleware`` → the app's own middleware (request ID, body limit, metrics, access
log) → the endpoint, its exceptions mapped once by the app's handlers; everything else through
the whole stack, unchanged. With the app's usual middleware (``RequestMiddleware`` alone),
that middleware and the endpoint's call run as one coroutine (:class:`_Flat`); under
``ordonum serve`` its :meth:`_Flat.serve` answers from uvicorn's request cycle, without the
ASGI calls (see :mod:`ordonum.service.protocol`), and writes a durable write's answer
(:class:`DurableResponse`) from the journal's wake-up itself (see
:mod:`ordonum.service.durable`).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette._exception_handler import _lookup_exception_handler, wrap_app_handling_exceptions
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from ordonum.service.durable import Durability
from ordonum.service.middleware import RequestIdSend, RequestMiddleware

__all__ = [
    "DurableResponse",
    "FastRoute",
    "HotDispatch",
    "document",
    "missing_header",
    "read_body",
]

REF = "#/components/schemas/{model}"


async def read_body(request: Request, adapter: TypeAdapter[Any]) -> Any:
    """The request body validated by ``adapter`` (422 problem on failure)."""
    raw = await request.body()
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = []
        for detail in exc.errors(include_url=False):
            err: dict[str, Any] = dict(detail)
            err["loc"] = ("body", *detail.get("loc", ()))
            err.pop("ctx", None)
            errors.append(err)
        raise RequestValidationError(errors) from None


def missing_header(name: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("header", name), "msg": "Field required", "type": "missing"}]
    )


class DurableResponse(Response):
    """An answer to send only once the write behind it is durable (``durability``). Sent as
    an ASGI response, it awaits that, then sends (the journal's failure raised there is
    mapped by the app's handlers, as from the endpoint). The direct lane
    (:meth:`_Flat.serve`) writes it from the journal's wake-up itself."""

    def __init__(
        self, content: bytes, durability: Durability, status_code: int, media_type: str
    ) -> None:
        super().__init__(content, status_code=status_code, media_type=media_type)
        self.durability = durability

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.durability.wait()
        await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class FastRoute:
    path: str
    method: str
    endpoint: Callable[[Request], Awaitable[Response]]
    summary: str
    tags: list[str]
    body: TypeAdapter[Any]
    response: type[BaseModel]
    status: int = 200
    headers: list[dict[str, Any]] = field(default_factory=list)
    path_params: list[str] = field(default_factory=list)

    def route(self) -> Route:
        return _TemplatedRoute(
            self.path, self.endpoint, methods=[self.method], name=self.endpoint.__name__
        )


class _TemplatedRoute(Route):
    """A Starlette route that, like FastAPI's, puts itself in the scope when it matches: the
    request middleware labels metrics and logs with ``scope["route"].path`` (the template,
    not the path with its IDs)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


class _Matched:
    """The innermost app of the hot stack: the endpoint :class:`HotDispatch` matched, its
    exceptions mapped by the app's handlers (Starlette's own mapping, applied once instead of
    twice: by ``ExceptionMiddleware`` and again by ``request_response``)."""

    def __init__(self, handlers: dict[Any, Any], debug: bool) -> None:
        tables = ExceptionMiddleware(self, handlers=handlers, debug=debug)
        self.tables = (tables._exception_handlers, tables._status_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["starlette.exception_handlers"] = self.tables
        request = Request(scope, receive, send)
        endpoint: Callable[[Request], Awaitable[Response]] = scope["endpoint"]

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(respond, request)(scope, receive, send)


class _Flat:
    """:class:`RequestMiddleware` and :class:`_Matched` in one coroutine, for the app's usual
    middleware (that one alone) and handlers (keyed by class, async): the same request ID,
    shedding, body limit, exception mapping, metrics and log line, without their
    per-request closures and the three wrappers every ``send`` went through. A plain
    in-memory ``Response`` (what every hot endpoint and problem handler answers) goes out as
    its two ASGI messages; any other response is sent as ``_Matched`` sends it (Starlette's
    ``wrap_app_handling_exceptions``). Measured in process on typed-ID scans (the stack under
    ``ServerErrorMiddleware`` driven directly, 12 alternating blocks of 3,000, three runs):
    a median of 98-101 µs per request against 112-114 for the two layers it replaces."""

    def __init__(
        self,
        middleware: RequestMiddleware,
        handlers: dict[Any, Any],
        debug: bool,
        error_handler: Callable[..., Any] | None,
    ):
        self.mw = middleware
        self.error_handler = error_handler
        tables = ExceptionMiddleware(self, handlers=handlers, debug=debug)
        self.tables = (tables._exception_handlers, tables._status_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mw = self.mw
        start, rid, length, token = mw.open(scope)
        tagged = RequestIdSend(send, rid)
        shed = mw.overdue(scope)
        try:
            if await mw.refused(shed, length, tagged):
                return
            scope["starlette.exception_handlers"] = self.tables
            receive = mw.limited(receive)  # also when a Content-Length is declared: as sent
            request = Request(scope, receive, send)
            response = await self.respond(request)
            if response is None:  # as Starlette: nothing sent
                return
            if type(response) is Response and response.background is None:
                tagged.status = response.status_code
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": [*response.raw_headers, (b"x-request-id", rid)],
                    }
                )
                await send({"type": "http.response.body", "body": response.body})
            else:
                await wrap_app_handling_exceptions(response, request)(scope, receive, tagged)
        finally:
            mw.close(scope, shed, tagged.status, start, token)

    async def respond(self, request: Request) -> Response | None:
        """The endpoint's response, or the app's handler's for the exception it raised
        (``None``: send nothing); an exception no handler maps propagates."""
        try:
            response: Response | None = await request.scope["endpoint"](request)
        except Exception as exc:
            response = await self.handled(request, exc)
        return response

    async def handled(self, request: Request, exc: Exception) -> Response | None:
        """The app's handler's response to ``exc``; ``exc`` raised again if none maps it."""
        handler: Any = _lookup_exception_handler(self.tables[0], exc)
        if handler is None:
            raise exc
        response: Response | None = await handler(request, exc)
        exc.__traceback__ = None  # reused exception instances accumulate tracebacks
        return response

    async def serve(self, cycle: RequestResponseCycle) -> None:
        """Serve a request straight from uvicorn's ``cycle``, for the server protocol
        (:class:`~ordonum.service.protocol.CoalescingProtocol`): what :meth:`__call__` does
        under ``ServerErrorMiddleware`` and uvicorn's ``run_asgi``, without the ASGI calls in
        between. When the whole body is already in (the usual case: it came with the
        headers), the request reads it without ``receive``; a plain response whose
        Content-Length is its body's goes to the connection as one write of the bytes
        uvicorn's ``send`` would have written. Anything else (a body still arriving, a
        ``100 Continue`` to send, a client gone, another response class, a HEAD, shedding, a
        refused body, a crash) takes the ASGI messages through uvicorn's own ``receive`` and
        ``send``. One difference: the log lines of a crash carry the request's ID (the ASGI
        path logs them after the middleware reset it)."""
        # uvicorn's TypedDicts, as the ASGI mappings Starlette takes
        scope: Scope = cycle.scope  # type: ignore[assignment]
        send: Send = cycle.send  # type: ignore[assignment]
        mw = self.mw
        start, rid, length, token = mw.open(scope)
        tagged = RequestIdSend(send, rid)
        shed = mw.overdue(scope)
        end = None  # when the answer was written, if not by this task
        try:
            if not await mw.refused(shed, length, tagged):
                scope["starlette.exception_handlers"] = self.tables
                receive = mw.limited(cycle.receive)  # type: ignore[arg-type]
                request = Request(scope, receive, send)
                if not (
                    cycle.more_body
                    or cycle.disconnected
                    or cycle.waiting_for_100_continue
                    or len(cycle.body) > mw.max_body  # refused while read, as sent
                ):
                    request._body = bytes(cycle.body)
                    cycle.body = bytearray()
                response = await self.respond(request)
                if type(response) is DurableResponse and _framed(scope, response):
                    outcome = await _when_durable(cycle, response, rid)
                    if isinstance(outcome, Exception):  # the journal failed: as raised
                        response = await self.handled(request, outcome)
                    else:
                        tagged.status = response.status_code
                        if outcome is None:  # not written by the wake-up: by this task
                            await _write(cycle, response, rid)
                        end = outcome
                        response = None
                if (
                    type(response) is Response
                    and response.background is None
                    and _framed(scope, response)
                ):
                    tagged.status = response.status_code
                    await _write(cycle, response, rid)
                elif response is not None:
                    await wrap_app_handling_exceptions(response, request)(scope, receive, tagged)
        except Exception as exc:
            await self.crashed(cycle, Request(scope), exc)
        except BaseException as exc:  # cancelled: as run_asgi, no handler
            await _failed(cycle, exc)
            raise
        else:  # as run_asgi
            if not cycle.response_started and not cycle.disconnected:
                cycle.logger.error("ASGI callable returned without starting response.")
                await cycle.send_500_response()
            elif not cycle.response_complete and not cycle.disconnected:
                cycle.logger.error("ASGI callable returned without completing response.")
                cycle.transport.close()
        finally:
            mw.close(scope, shed, tagged.status, start, token, end)
            cycle.on_response = _nothing  # as run_asgi: the connection is not ours any more

    async def crashed(self, cycle: RequestResponseCycle, request: Request, exc: Exception) -> None:
        """An exception no handler maps, as ``ServerErrorMiddleware`` and uvicorn's
        ``run_asgi`` answer it: the app's 500 handler's response if nothing was sent yet
        (uvicorn's plain 500 if that handler fails too), the error logged, the connection
        closed."""
        failure: BaseException = exc
        try:
            if not cycle.response_started:
                handler = self.error_handler
                if handler is None:
                    response: Response = PlainTextResponse("Internal Server Error", 500)
                elif is_async_callable(handler):
                    response = await handler(request, exc)
                else:
                    response = await run_in_threadpool(handler, request, exc)
                await response(request.scope, cycle.receive, cycle.send)  # type: ignore[arg-type]
        except BaseException as second:  # the handler's own failure is what run_asgi logs
            failure = second
        await _failed(cycle, failure)


async def _failed(cycle: RequestResponseCycle, exc: BaseException) -> None:
    """uvicorn's ``run_asgi`` after an exception: logged; its plain 500 if nothing was sent
    yet, else the connection closed."""
    cycle.logger.error("Exception in ASGI application\n", exc_info=exc)
    if not cycle.response_started:
        await cycle.send_500_response()
    else:
        cycle.transport.close()


def _framed(scope: Scope, response: Response) -> bool:
    """Whether uvicorn's ``send`` would write ``response`` as it is: not a HEAD (no body),
    and its Content-Length (the first, as uvicorn reads) is its body's length."""
    if scope["method"] == "HEAD":
        return False
    for name, value in response.raw_headers:
        if name == b"content-length":
            return value.isdigit() and int(value) == len(response.body)
    return False


def _nothing() -> None:
    pass


async def _when_durable(
    cycle: RequestResponseCycle, response: DurableResponse, rid: bytes
) -> float | Exception | None:
    """Waits until ``response``'s write is durable, and writes it then, from the journal's
    wake-up (or a poll) itself, not once this task is resumed; returns when it was written
    (``time.perf_counter()``), the journal's exception, or ``None`` if the task is to write
    it (the socket's buffer is full, or the client is gone)."""
    done: asyncio.Future[float | Exception | None] = asyncio.get_running_loop().create_future()

    def durable(exc: BaseException | None) -> None:
        if done.done():  # the request was cancelled
            return
        if exc is not None:
            done.set_result(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        elif cycle.flow.write_paused or cycle.disconnected:
            done.set_result(None)
        else:
            try:
                _write_now(cycle, response, rid)
            except Exception as error:  # an invalid header: raised in the task, as sent
                done.set_exception(error)
            else:
                done.set_result(time.perf_counter())

    # Settled from the waiter (another request's handler, or the wake-up's reader): run in
    # this request's context, not theirs.
    context = contextvars.copy_context()
    response.durability.then(lambda exc: context.run(durable, exc))
    try:
        return await done
    except asyncio.CancelledError:
        # Cancelled once answered (a shutdown's timeout): the request is over, not failed.
        written = done.result() if done.done() and not done.cancelled() else None
        task = asyncio.current_task()
        if isinstance(written, float) and task is not None:
            task.uncancel()
            return written
        raise


async def _write(cycle: RequestResponseCycle, response: Response, rid: bytes) -> None:
    """``response`` and ``X-Request-ID`` on the connection (see :func:`_write_now`), once the
    socket's buffer has room."""
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    _write_now(cycle, response, rid)


def _write_now(cycle: RequestResponseCycle, response: Response, rid: bytes) -> None:
    """``response`` (a plain ``Response``, its headers lowercased and its Content-Length
    set by Starlette) and ``X-Request-ID`` on the connection in one write: the bytes
    uvicorn's ``send`` writes for its two messages, with the same header checks."""
    if cycle.disconnected:
        return
    if cycle.access_log:  # uvicorn's own line, when its access log is on
        cycle.access_logger.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(cycle.scope),
            cycle.scope["method"],
            get_path_with_query_string(cycle.scope),
            cycle.scope["http_version"],
            response.status_code,
        )
    cycle.response_started = True  # as uvicorn's send: before the checks below may raise
    cycle.waiting_for_100_continue = False
    content: list[bytes | memoryview] = [STATUS_LINE[response.status_code]]
    closing = False
    for name, value in (*cycle.default_headers, *response.raw_headers, (b"x-request-id", rid)):
        if HEADER_RE.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
        if name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
            cycle.keep_alive = False
            closing = True
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive and not closing:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", response.body)
    cycle.response_complete = True
    transport = cycle.transport
    getattr(transport, "write_now", transport.write)(b"".join(content))
    cycle.message_event.set()
    if not cycle.keep_alive:
        transport.close()
    cycle.on_response()


class HotDispatch:
    """The top of the app's ASGI stack: a request that fully matches a hot route (method
    included) takes the short stack, anything else (other routes, 404s, 405s, lifespan) the
    whole one. Both stacks share the app's middleware and exception handlers, so answers,
    problem documents, metrics and logs are the same either way."""

    def __init__(
        self,
        full: ASGIApp,
        routes: list[Route],
        middleware: list[Any],
        handlers: dict[Any, Any],
        debug: bool,
    ) -> None:
        self.full = full
        self.routes = routes
        self.methods = frozenset(m for r in routes for m in (r.methods or ()))
        error_handler = None
        others: dict[Any, Any] = {}
        for key, value in handlers.items():  # as Starlette splits them
            if key in (500, Exception):
                error_handler = value
            else:
                others[key] = value
        app: ASGIApp
        self.flat: _Flat | None = None
        self.debug = debug  # ServerErrorMiddleware's debug page: never served directly
        # _Flat maps exceptions as Starlette does for handlers keyed by class and async (the
        # app's); status-code or sync handlers keep the generic stack.
        flat_handlers = all(isinstance(k, type) and is_async_callable(v) for k, v in others.items())
        if flat_handlers and [cls for cls, _, _ in middleware] == [RequestMiddleware]:
            _, args, kwargs = middleware[0]
            mw = RequestMiddleware(full, *args, **kwargs)
            app = self.flat = _Flat(mw, others, debug, error_handler)
        else:
            app = _Matched(others, debug)
            for cls, args, kwargs in reversed(middleware):
                app = cls(app, *args, **kwargs)
        self.hot: ASGIApp = ServerErrorMiddleware(app, handler=error_handler, debug=debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.methods:
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await self.hot(scope, receive, send)
                    return
        await self.full(scope, receive, send)

    def direct(self, scope: Scope) -> Callable[[RequestResponseCycle], Awaitable[None]] | None:
        """For the server protocol: how to serve ``scope`` straight from uvicorn's request
        cycle (:meth:`_Flat.serve`, the scope completed as the route match completes it), or
        ``None`` for the ASGI call (not a hot route, or not the flat stack)."""
        if self.flat is not None and not self.debug and scope["method"] in self.methods:
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    return self.flat.serve
        return None


def _add_schema(components: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


def document(openapi: dict[str, Any], routes: list[FastRoute]) -> None:
    """Add the operations of ``routes`` to an OpenAPI document (in place)."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for r in routes:
        body = _add_schema(components, r.body.json_schema(ref_template=REF))
        response_schema = _add_schema(
            components, r.response.model_json_schema(ref_template=REF, mode="serialization")
        )
        components.setdefault(r.response.__name__, response_schema)
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in r.path_params
        ] + r.headers
        operation: dict[str, Any] = {
            "tags": r.tags,
            "summary": r.summary,
            "operationId": r.endpoint.__name__,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}},
            },
            "responses": {
                str(r.status): {
                    "description": "Successful Response",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model=r.response.__name__)}
                        }
                    },
                }
            },
        }
        if parameters:
            operation["parameters"] = parameters
        openapi.setdefault("paths", {}).setdefault(r.path, {})[r.method.lower()] = operation
