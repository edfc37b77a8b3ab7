"""Creating a prescription: shared by ``POST /v1/prescriptions`` and ``ordonum issue``.

Order: new ID → token (fresh access code) → acknowledgement signed → the backend creates the
prescription with its token text, durably (embedded: one journal record, one fsync;
PostgreSQL: one transaction) → only then the answer goes out.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ordonum import IdGenerator, SigningKey, Store, issue_token
from ordonum.service.ack import acknowledge
from ordonum.service.models import CreateIn

__all__ = ["create_prescription", "new_prescription", "store_record"]

DAY_MS = 86_400_000


def store_record(
    rx_id: str, prescriber_rpps: str, body: CreateIn, access_code: str, now_ms: int
) -> dict[str, Any]:
    """The store's create record for an API body (see the store contract)."""
    return {
        "id": rx_id,
        "prescriber_rpps": prescriber_rpps,
        "patient": {
            "nir": body.patient.nir,
            "name": body.patient.name,
            "birth_date": body.patient.birth_date.isoformat(),
        },
        "valid_until_ms": now_ms + body.valid_days * DAY_MS,
        "lines": [
            {
                "label": line.label,
                "cip13": line.cip13,
                "dosage": line.dosage,
                "quantity": line.quantity,
                "renewals": line.renewals,
                "substitutable": line.substitutable,
            }
            for line in body.lines
        ],
        "prescriber_may_view_dispensations": body.prescriber_may_view_dispensations,
        "access_code": access_code,
    }


def new_prescription(
    key: SigningKey,
    ids: IdGenerator,
    prescriber_rpps: str,
    body: CreateIn,
    now_ms: int,
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``(store record, token text, the API's 201 body)`` of a new prescription: a new ID,
    a token with a fresh access code, the signed acknowledgement. Writes nothing: the caller
    acknowledges only once its backend made the record and the token durable."""
    rx_id = ids.new()
    token = issue_token(key, rx_id)
    record = store_record(rx_id, prescriber_rpps, body, token.access_code, now_ms)
    content = {k: v for k, v in record.items() if k != "access_code"}
    del content["prescriber_may_view_dispensations"]
    content["created_at_ms"] = now_ms
    answer = {
        "id": rx_id,
        "token": token.text,
        "access_code": token.access_code,
        "qr_svg_url": f"/v1/prescriptions/{rx_id}/qr.svg",
        "qr_png_url": f"/v1/prescriptions/{rx_id}/qr.png",
        "acknowledgement": acknowledge(key, content),
    }
    return record, token.text, answer


def create_prescription(
    store: Store,
    key: SigningKey,
    ids: IdGenerator,
    prescriber_rpps: str,
    body: CreateIn,
    *,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Create durably in an embedded store (``ordonum issue`` without ``--url``); return the
    API's 201 body. Blocks on one fsync."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    record, token, answer = new_prescription(key, ids, prescriber_rpps, body, now)
    store.create(orjson.dumps({**record, "qr_token": token}), now_ms=now)
    return answer
