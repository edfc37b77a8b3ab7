"""The patient's own prescriptions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from ordonum import InvalidId
from ordonum.service.auth import Principal
from ordonum.service.deps import canonical_id, json_response, require, services
from ordonum.service.models import MyPrescriptionsOut
from ordonum.service.problems import ProblemError

router = APIRouter(prefix="/v1/me", tags=["patient"])


@router.get(
    "/prescriptions",
    response_model=MyPrescriptionsOut,
    summary="The caller's prescriptions, newest first (patient)",
)
async def my_prescriptions(
    principal: Annotated[Principal, Depends(require("patient"))],
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[
        str | None, Query(max_length=40, description="cursor: next_cursor of the last page")
    ] = None,
) -> Response:
    svc = services(request)
    assert principal.nir is not None
    cursor = None
    if before is not None:
        try:
            cursor = canonical_id(before)
        except InvalidId as exc:
            raise ProblemError(400, f"invalid cursor: {exc}") from None
    ids = await svc.backend.by_patient(principal.nir, limit=limit + 1, before=cursor)
    more = len(ids) > limit
    ids = ids[:limit]
    docs = [doc for doc in await svc.backend.get_many(ids) if doc is not None]
    next_cursor = f'"{ids[-1]}"'.encode() if more and ids else b"null"
    # The documents are the store's ready bytes: spliced, not re-serialised.
    body = b'{"prescriptions":[' + b",".join(docs) + b'],"next_cursor":' + next_cursor + b"}"
    return json_response(body)
