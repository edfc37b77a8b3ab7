"""Dispensations: record one (pharmacist, with the paper's proof), list them (its prescriber
if the patient consents, its patient).

A dispensation is acknowledged only once durable: the backend queues it and awaits its
journal commit (embedded store) or its COMMIT (PostgreSQL), without blocking the event
loop. The pharmacy and pharmacist come from the bearer
token, never from the body. Idempotency keys are scoped to the pharmacy (``FINESS:key``), so
two pharmacies cannot collide on, or read each other's answers through, a key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import TypeAdapter
from starlette.responses import Response

from ordonum import InvalidId, InvalidToken, NotFound, parse_access_code, parse_id
from ordonum.service.auth import Principal
from ordonum.service.deps import (
    JSON,
    authenticate,
    json_response,
    owned,
    require,
    services,
)
from ordonum.service.fastroute import DurableResponse, FastRoute, missing_header, read_body
from ordonum.service.models import DispensationsOut, DispenseIn, DispenseOut
from ordonum.service.problems import ProblemError, not_found
from ordonum.service.routes.scan import locked, lockout_key

router = APIRouter(prefix="/v1/prescriptions", tags=["pharmacy"])
RxPath = Annotated[str, "prescription ID"]


DISPENSE_BODY: TypeAdapter[DispenseIn] = TypeAdapter(DispenseIn)
PHARMACIST = frozenset({"pharmacist"})


async def dispense(request: Request) -> Response:
    principal = authenticate(request, PHARMACIST)
    idempotency_key = request.headers.get("idempotency-key")
    if not idempotency_key or len(idempotency_key) > 128:
        raise missing_header("Idempotency-Key")
    body: DispenseIn = await read_body(request, DISPENSE_BODY)
    svc = services(request)
    id = request.path_params["id"]
    try:
        rx_id: str | None = parse_id(id).text
    except InvalidId:
        rx_id = None
    manual = body.token is None
    if body.token is not None:
        try:
            token = svc.qr.verify(body.token)
        except InvalidToken:
            token = None
        if token is None or token.id != rx_id:
            rx_id, code = None, svc.dummy_code
        else:
            code = token.access_code
    else:
        assert body.access_code is not None
        await locked(svc, lockout_key(id))
        try:
            code = parse_access_code(body.access_code)
        except ValueError:
            rx_id, code = None, svc.dummy_code
    record = {
        "pharmacy_finess": principal.finess,
        "pharmacist_rpps": principal.rpps,
        "lines": [
            {
                "line": line.line,
                "quantity": line.quantity,
                "cip13": line.cip13,
                "intervention": {
                    "kind": line.intervention.kind,
                    "motif": line.intervention.motif,
                    "prescriber_agreed_at": (
                        None
                        if line.intervention.prescriber_agreed_at is None
                        else line.intervention.prescriber_agreed_at.isoformat()
                    ),
                },
            }
            for line in body.lines
        ],
    }
    try:
        out, durability = await svc.backend.dispense_start(
            rx_id or svc.dummy_id,
            record,
            idempotency_key=f"{principal.finess}:{idempotency_key}",
            access_code=code,
        )
    except (NotFound, InvalidToken):
        if manual:
            await svc.backend.lockout_failed(lockout_key(id))
        return not_found()
    if rx_id is None:  # pragma: no cover - the dummy ID never exists
        return not_found()
    if manual:
        await svc.backend.lockout_succeeded(rx_id)
    # Sent once durable (the journal's failure then answers 503, as from the backend).
    return DurableResponse(out, durability, status_code=201, media_type=JSON)


FAST = [
    FastRoute(
        path="/v1/prescriptions/{id}/dispensations",
        method="POST",
        endpoint=dispense,
        summary="Record a dispensation (pharmacist; Idempotency-Key required)",
        tags=["pharmacy"],
        body=DISPENSE_BODY,
        response=DispenseOut,
        status=201,
        path_params=["id"],
        headers=[
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                "description": "the same key again returns the first answer, writing nothing",
            }
        ],
    )
]


@router.get(
    "/{id}/dispensations",
    response_model=DispensationsOut,
    summary="Dispensations of a prescription (its patient; its prescriber with consent)",
)
async def dispensations(
    id: str,
    principal: Annotated[Principal, Depends(require("prescriber", "patient"))],
    request: Request,
) -> Response:
    svc = services(request)
    rx_id, (_, _, consent) = await owned(svc, id, principal)
    if principal.role == "prescriber" and not consent:
        raise ProblemError(403, "the patient does not allow the prescriber to see dispensations")
    return json_response(await svc.backend.dispensations(rx_id))
