"""The pharmacy scan: a token read from the QR code, or an ID and access code typed by hand.

Every failure — unknown ID, wrong code, malformed ID or code, forged or altered token, a
token for another ID — answers the same 404 bytes (:data:`NOT_FOUND_BODY`, no ID echoed),
after the same store work: when the answer is already known to be 404, the handler still
runs one store scan (one ID lookup and one constant-time digest comparison) on an ID that is
never issued (``Services.dummy_id``), called the same way as a real scan. The backend logs
the access before it answers, without waiting for it to be durable (the embedded store's
``Store.scan`` runs on the event loop and costs microseconds; PostgreSQL commits the access
log entry with ``synchronous_commit = off``). The token path always pays one signature
check.
Manual entry of an ID locks after a burst of wrong codes (429 + Retry-After); the QR path
never locks.

Hot path: the backend's document bytes go out as they are (no Python JSON round trip: the
store numbers lines from 0, like the HTTP contract).
"""

from __future__ import annotations

import contextlib

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from ordonum import InvalidId, InvalidToken, NotFound, parse_access_code, parse_id
from ordonum.service.deps import JSON, authenticate, services
from ordonum.service.fastroute import FastRoute, read_body
from ordonum.service.models import PrescriptionDoc, ScanByCode, ScanByToken
from ordonum.service.problems import ProblemError, not_found
from ordonum.service.state import Services


async def _miss(svc: Services, code: str, actor: str) -> Response:
    """The uniform 404, after the same store work as a hit (the same backend call)."""
    with contextlib.suppress(NotFound, ValueError):
        await svc.backend.scan(svc.dummy_id, code, actor=actor)
    return not_found()


async def locked(svc: Services, rx_id: str) -> None:
    wait = await svc.backend.lockout_retry_after(rx_id)
    if wait:
        raise ProblemError(
            429,
            "manual entry of this ID is locked after repeated wrong access codes; scan the QR"
            " code or retry later",
            headers={"Retry-After": str(wait)},
        )


def lockout_key(text: str) -> str:
    try:
        return parse_id(text).text
    except (InvalidId, TypeError):
        return text.strip().upper()


SCAN_BODY: TypeAdapter[ScanByToken | ScanByCode] = TypeAdapter(ScanByToken | ScanByCode)
PHARMACIST = frozenset({"pharmacist"})


async def scan(request: Request) -> Response:
    principal = authenticate(request, PHARMACIST)
    body = await read_body(request, SCAN_BODY)
    svc = services(request)
    actor = principal.actor
    if isinstance(body, ScanByToken):
        try:
            token = svc.qr.verify(body.token)
        except InvalidToken:
            return await _miss(svc, svc.dummy_code, actor)
        rx_id, code = token.id, token.access_code
        manual = False
    else:
        key = lockout_key(body.id)
        await locked(svc, key)
        manual = True
        try:
            rx_id = parse_id(body.id).text
            code = parse_access_code(body.access_code)
        except ValueError:  # InvalidId or a malformed code
            await svc.backend.lockout_failed(key)
            return await _miss(svc, svc.dummy_code, actor)
    try:
        # The backend logs the access before it answers (not waiting for durability).
        doc = await svc.backend.scan(rx_id, code, actor=actor)
    except (NotFound, ValueError):
        if manual:
            await svc.backend.lockout_failed(rx_id)
        return not_found()
    if manual:
        await svc.backend.lockout_succeeded(rx_id)
    return Response(doc, media_type=JSON)


FAST = [
    FastRoute(
        path="/v1/scan",
        method="POST",
        endpoint=scan,
        summary="Fetch a prescription by its QR token or by ID + access code (pharmacist)",
        tags=["pharmacy"],
        body=SCAN_BODY,
        response=PrescriptionDoc,
    )
]
