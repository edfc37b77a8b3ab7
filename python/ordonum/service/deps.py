"""Request dependencies: the open services, the authenticated caller, shared helpers."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from ordonum import InvalidId, NotFound, parse_id
from ordonum.service.auth import Principal, Role, unauthorized
from ordonum.service.problems import ProblemError
from ordonum.service.state import Services

__all__ = [
    "JSON",
    "Caller",
    "authenticate",
    "canonical_id",
    "json_response",
    "owned",
    "require",
    "services",
]

JSON = "application/json"


def services(request: Request) -> Services:
    """The open services of the app serving ``request``."""
    svc: Services = request.app.state.services
    return svc


def authenticate(request: Request, allowed: frozenset[str]) -> Principal:
    """The verified caller of ``request``: 401 without a valid bearer token, 403 unless its
    role is in ``allowed``, 429 when its token bucket is empty."""
    svc: Services = request.app.state.services
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise unauthorized("invalid_request", "bearer token required")
    principal = svc.verifier.verify(credentials.strip())
    if principal.role not in allowed:
        raise ProblemError(403, f"this operation is not open to the {principal.role} role")
    wait = svc.limiter.take(principal.key)
    if wait:
        raise ProblemError(
            429, "rate limit exceeded", headers={"Retry-After": str(math.ceil(wait))}
        )
    return principal


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the verified caller, 403 unless its role is one of ``roles``, 429 when
    its token bucket is empty.

    One flat ``async`` dependency that reads the header itself: FastAPI runs a sync
    dependency in a worker thread and resolves nested ones one by one, which costs more than
    everything else on the scan path. (The bearer scheme is declared in the OpenAPI
    document by ``app._problem_openapi``.)"""

    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        return authenticate(request, allowed)

    return dependency


Caller = Principal


def json_response(body: bytes | Any, status: int = 200) -> Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(data, status_code=status, media_type=JSON)


def canonical_id(text: str) -> str:
    """Canonical ID text; :class:`~ordonum.InvalidId` (400) if malformed."""
    return parse_id(text).text


async def owned(
    svc: Services, rx_text: str, principal: Principal
) -> tuple[str, tuple[str, str, bool]]:
    """The canonical ID and owner tuple of a prescription of the caller's (prescriber or
    patient). Someone else's prescription is a 404 like a missing one: no existence leak."""
    try:
        rx_id = canonical_id(rx_text)
    except InvalidId as exc:
        raise ProblemError(400, f"invalid prescription ID: {exc}") from None
    try:
        owner = await svc.backend.owner(rx_id)
    except NotFound:
        raise ProblemError(404, "No such prescription.") from None
    prescriber, nir, _consent = owner
    if (principal.role == "prescriber" and principal.rpps == prescriber) or (
        principal.role == "patient" and principal.nir == nir
    ):
        return rx_id, owner
    raise ProblemError(404, "No such prescription.")
