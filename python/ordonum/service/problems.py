"""RFC 9457 problem details: every error the service returns is ``application/problem+json``.

``type`` is a relative URI under ``/problems/`` naming the kind of error; ``title`` is fixed
per type; ``detail`` says what went wrong in this request, except where saying it would leak
(the uniform 404 of the pharmacy paths: same bytes whatever was wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ordonum import Conflict, InvalidId, InvalidIdentifier, InvalidRecord, NotFound, StoreFailed

__all__ = [
    "NOT_FOUND_BODY",
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "ProblemError",
    "install_problem_handlers",
    "not_found",
    "problem_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("ordonum.service")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    500: "internal-error",
    503: "unavailable",
}


class Problem(BaseModel):
    """An RFC 9457 problem document (extension members allowed)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None


def problem_body(status: int, detail: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "type": f"/problems/{_TYPES.get(status, 'error')}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return orjson.dumps(body)


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    return Response(
        problem_body(status, detail, **extra),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


# The one 404 of the scan and dispensation paths: a wrong ID, a wrong access code, a forged
# token all get these exact bytes (no ID echoed).
NOT_FOUND_BODY = problem_body(404, "No prescription matches this ID and access code or token.")


def not_found() -> Response:
    return Response(NOT_FOUND_BODY, status_code=404, media_type=PROBLEM_MEDIA_TYPE)


class ProblemError(Exception):
    """Raised by routes and dependencies to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.body = body

    def response(self) -> Response:
        if self.body is not None:
            return Response(
                self.body,
                status_code=self.status,
                media_type=PROBLEM_MEDIA_TYPE,
                headers=dict(self.headers) if self.headers else None,
            )
        return problem_response(self.status, self.detail, headers=self.headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install_problem_handlers(app: FastAPI) -> None:
    """Map framework and domain errors to problem documents."""

    async def problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return exc.response()

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404:
            detail = "No such resource."
        return problem_response(exc.status_code, detail, headers=exc.headers)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": _loc(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err["type"]}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": "", "msg": "invalid request"}
        return problem_response(422, f"{first['loc']}: {first['msg']}", errors=errors)

    async def domain_not_found(_: Request, exc: Exception) -> Response:
        return problem_response(404, "No such prescription.")

    async def conflict(_: Request, exc: Exception) -> Response:
        return problem_response(409, str(exc))

    async def invalid(_: Request, exc: Exception) -> Response:
        return problem_response(422, str(exc))

    async def invalid_id(_: Request, exc: Exception) -> Response:
        return problem_response(400, f"invalid prescription ID: {exc}")

    async def store_failed(_: Request, exc: Exception) -> Response:
        log.error("store failed", extra={"error": str(exc)})
        return problem_response(503, "The store refuses writes after an I/O error.")

    async def internal(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(500, "Internal error.")

    app.add_exception_handler(ProblemError, problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(NotFound, domain_not_found)
    app.add_exception_handler(Conflict, conflict)
    app.add_exception_handler(InvalidRecord, invalid)
    app.add_exception_handler(InvalidIdentifier, invalid)
    app.add_exception_handler(InvalidId, invalid_id)
    app.add_exception_handler(StoreFailed, store_failed)
    app.add_exception_handler(Exception, internal)
