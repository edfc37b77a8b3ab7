"""The FastAPI application: ``create_app(settings)``.

The lifespan opens the services (keys created on first run, the backend: the embedded store
or PostgreSQL) and closes them on shutdown; tests may pass ``services`` already open, which
the app then neither opens nor closes. Middleware: one pure ASGI layer
(:mod:`ordonum.service.middleware`).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

import ordonum
from ordonum.service.deps import json_response
from ordonum.service.deps import services as services_of
from ordonum.service.fastroute import HotDispatch, document
from ordonum.service.metrics import Metrics
from ordonum.service.middleware import AccessLog, RequestMiddleware, configure_logging
from ordonum.service.models import Health
from ordonum.service.problems import PROBLEM_MEDIA_TYPE, Problem, install_problem_handlers
from ordonum.service.routes import dispensations, me, prescriptions, scan
from ordonum.service.settings import Settings
from ordonum.service.state import Services

__all__ = ["create_app"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        400: "Malformed identifier",
        401: "Missing, expired or invalid bearer token",
        403: "Role not allowed, or the patient objected",
        404: "Not found (or not yours)",
        409: "The prescription's state forbids it",
        413: "Body too large",
        422: "Invalid body or parameters",
        429: "Rate limited, or manual entry locked (see Retry-After)",
        503: "The store refuses writes after an I/O error, or PostgreSQL is unreachable",
    }.items()
}


FAST_ROUTES = [*scan.FAST, *dispensations.FAST, *prescriptions.FAST]


def _problem_openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI with the fast routes documented, every error response as
    application/problem+json (Problem schema) and the bearer scheme on every /v1 operation."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    document(schema, FAST_ROUTES)
    ref = {"$ref": "#/components/schemas/Problem"}
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if path.startswith("/v1/"):
                op["security"] = [{"bearer": []}]
                for code in ("400", "401", "403", "404", "413", "422", "429", "503"):
                    responses.setdefault(code, {"description": _ERRORS[int(code)]["description"]})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
                    if code == "429":
                        response["headers"] = {
                            "Retry-After": {"schema": {"type": "integer"}, "required": True}
                        }
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "OpenID Connect access token (EdDSA or ES256) with role claims",
        }
    }
    components = schema["components"].setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    app.openapi_schema = schema
    return schema


GC_YOUNG = 50_000
"""Allocations between two collections of the cyclic GC's youngest generation (default 700)."""

_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


class _App(FastAPI):
    """FastAPI whose hot routes (``hot``) skip the layers in front of the router: see
    :class:`ordonum.service.fastroute.HotDispatch`. Empty ``hot`` (OpenTelemetry on, whose
    exception spans live in one of those layers): the stock stack for every request."""

    hot: list[Route]

    def build_middleware_stack(self) -> ASGIApp:
        full = super().build_middleware_stack()
        hot: list[Route] = getattr(self, "hot", [])
        if not hot:
            return full
        return HotDispatch(
            full, hot, list(self.user_middleware), dict(self.exception_handlers), self.debug
        )

    def direct(self, scope: Scope) -> Callable[[RequestResponseCycle], Awaitable[None]] | None:
        """What the server protocol asks before calling the app (see
        :class:`ordonum.service.protocol.CoalescingProtocol`): a hot request is served from
        uvicorn's request cycle by :meth:`HotDispatch.direct`'s answer, the scope completed as
        ``__call__`` completes it; ``None`` for everything else, and before the stack is
        built (the lifespan builds it)."""
        stack = self.middleware_stack
        if not isinstance(stack, HotDispatch) or scope["type"] != "http":
            return None
        if self.root_path:
            scope["root_path"] = self.root_path
        scope["app"] = self
        return stack.direct(scope)


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """The service's ASGI app. ``settings`` default to :meth:`Settings.from_env`."""
    if settings is None:  # the app factory of `ordonum serve --workers N`: one per process
        settings = Settings.from_env()
        configure_logging(settings.log_level)
    given = services
    metrics = Metrics(given.backend.stats if given is not None else None)
    access_log = AccessLog() if settings.access_log else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = given if given is not None else await Services.open(settings)
        app.state.services = svc
        metrics.gauges = svc.backend.stats
        # Everything made so far (modules, models, routes, the open services: ~60k objects)
        # lives as long as the process: out of the cyclic GC's reach, a full collection no
        # longer walks them (~15-25 ms measured here, a pause every request in flight waits).
        # And the youngest generation is collected every 50,000 allocations, not 700: at the
        # national burst the default spent ~10 % of the server's CPU (perf) walking the
        # objects of the requests in flight, which reference counting frees anyway; cycles
        # (an exception and its traceback) wait a little longer.
        gc.freeze()
        gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            if access_log is not None:
                access_log.flush()
            if given is None:
                await svc.close()

    app = _App(
        title="ordonum",
        version=ordonum.__version__,
        description=(
            "The French e-prescription flow: prescribers create, pharmacies scan and "
            "dispense, patients see and control. Errors are RFC 9457 problem documents."
        ),
        lifespan=lifespan,
        responses=_ERRORS,
        # FastAPI's native OpenTelemetry asks the global providers on every request whether
        # it is enabled (an environment lookup each time: ~3 % of a scan's CPU, profiled);
        # off unless the operator wants it. /metrics and the JSON access log are always on.
        telemetry=None if settings.otel else _NO_TELEMETRY,
    )
    if given is not None:
        app.state.services = given
    install_problem_handlers(app)
    # The hot routes first: plain Starlette routes (see ordonum.service.fastroute).
    hot = [fast.route() for fast in FAST_ROUTES]
    app.router.routes[:0] = hot
    app.hot = [] if settings.otel else hot
    for module in (dispensations, prescriptions, me):
        app.include_router(module.router)

    @app.get("/healthz", tags=["operations"], response_model=Health)
    async def healthz(request: Request) -> Response:
        svc = services_of(request)
        return json_response(
            {"status": "ok", "prescriptions": await svc.backend.count(), "store": svc.backend.kind}
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app.openapi = lambda: _problem_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(
        RequestMiddleware,
        metrics=metrics,
        max_body=settings.max_body,
        access_log=access_log,
        max_queue=settings.max_queue_ms / 1000,
    )
    return app
