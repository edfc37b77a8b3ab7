"""Prescriptions: create (prescriber), QR images, cancel (its prescriber), consent and access
log (its patient)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Request
from pydantic import TypeAdapter
from starlette.responses import Response

from ordonum import qr
from ordonum.service.auth import Principal
from ordonum.service.create import new_prescription
from ordonum.service.deps import JSON, authenticate, json_response, owned, require, services
from ordonum.service.fastroute import DurableResponse, FastRoute, read_body
from ordonum.service.models import (
    AccessLogOut,
    CancelOut,
    ConsentIn,
    ConsentOut,
    CreateIn,
    CreateOut,
)
from ordonum.service.problems import ProblemError
from ordonum.service.state import Services

router = APIRouter(prefix="/v1/prescriptions", tags=["prescriptions"])

Prescriber = Annotated[Principal, Depends(require("prescriber"))]
Patient = Annotated[Principal, Depends(require("patient"))]
Owner = Annotated[Principal, Depends(require("prescriber", "patient"))]
RxPath = Annotated[str, Path(max_length=40, description="prescription ID")]


CREATE_BODY: TypeAdapter[CreateIn] = TypeAdapter(CreateIn)
PRESCRIBER = frozenset({"prescriber"})


async def create(request: Request) -> Response:
    """A plain Starlette route (see ordonum.service.fastroute): creations are a third of the
    national mix, and FastAPI's dependency machinery cost a quarter of this handler's time."""
    principal = authenticate(request, PRESCRIBER)
    body = await read_body(request, CREATE_BODY)
    svc = services(request)
    assert principal.rpps is not None
    now = int(time.time() * 1000)
    record, token, answer = new_prescription(svc.qr.signing, svc.ids, principal.rpps, body, now)
    durability = await svc.backend.create_start(record, token, now_ms=now)
    # Sent once durable (the journal's failure then answers 503, as from the backend).
    return DurableResponse(orjson.dumps(answer), durability, status_code=201, media_type=JSON)


FAST = [
    FastRoute(
        path="/v1/prescriptions",
        method="POST",
        endpoint=create,
        summary="Create a prescription",
        tags=["prescriptions"],
        body=CREATE_BODY,
        response=CreateOut,
        status=201,
    )
]


async def _token(svc: Services, rx_id: str) -> str:
    token = await svc.backend.token(rx_id)
    if token is None:  # a record made without its token text (e.g. straight with Store.create)
        raise ProblemError(404, "No QR code is kept for this prescription.")
    return token


@router.get(
    "/{id}/qr.svg",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}, "description": "the QR code"}},
    summary="The prescription's QR code, SVG (its prescriber, its patient)",
)
async def qr_svg(id: RxPath, principal: Owner, request: Request) -> Response:
    svc = services(request)
    rx_id, _ = await owned(svc, id, principal)
    return Response(qr.svg(await _token(svc, rx_id)), media_type="image/svg+xml")


@router.get(
    "/{id}/qr.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the QR code"}},
    summary="The prescription's QR code, PNG (its prescriber, its patient)",
)
async def qr_png(id: RxPath, principal: Owner, request: Request) -> Response:
    svc = services(request)
    rx_id, _ = await owned(svc, id, principal)
    return Response(qr.png(await _token(svc, rx_id)), media_type="image/png")


@router.post("/{id}/cancel", response_model=CancelOut, summary="Cancel (its prescriber)")
async def cancel(id: RxPath, principal: Prescriber, request: Request) -> Response:
    svc = services(request)
    rx_id, _ = await owned(svc, id, principal)
    assert principal.rpps is not None
    status = await svc.backend.cancel(rx_id, prescriber_rpps=principal.rpps)
    return json_response({"id": rx_id, "status": status})


@router.put(
    "/{id}/consent",
    response_model=ConsentOut,
    summary="Allow or refuse the prescriber's view of dispensations (its patient)",
)
async def consent(id: RxPath, body: ConsentIn, principal: Patient, request: Request) -> Response:
    svc = services(request)
    rx_id, _ = await owned(svc, id, principal)
    allowed = body.prescriber_may_view_dispensations
    await svc.backend.set_consent(rx_id, allowed)
    return json_response({"id": rx_id, "prescriber_may_view_dispensations": allowed})


@router.get(
    "/{id}/access-log",
    response_model=AccessLogOut,
    summary="Who read the prescription, when (its patient)",
)
async def access_log(id: RxPath, principal: Patient, request: Request) -> Response:
    svc = services(request)
    rx_id, _ = await owned(svc, id, principal)
    return json_response(await svc.backend.access_log(rx_id))
