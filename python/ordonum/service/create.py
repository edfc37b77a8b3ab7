"""Creating a prescription: shared by ``POST /v1/prescriptions`` and ``ordonum issue``.

Order: new ID → token (fresh access code) → token text kept in the vault (fsync) → the
store's create (fsync) → acknowledgement signed. The creation is acknowledged only when both
are durable; a crash in between leaves at worst an unused vault row.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ordonum import IdGenerator, SigningKey, Store, issue_token
from ordonum.service.ack import acknowledge
from ordonum.service.models import CreateIn
from ordonum.service.vault import TokenVault

__all__ = ["create_prescription", "store_record"]

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


def create_prescription(
    store: Store,
    vault: TokenVault,
    key: SigningKey,
    ids: IdGenerator,
    prescriber_rpps: str,
    body: CreateIn,
    *,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """Create durably; return the API's 201 body. Blocks on two fsyncs."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rx_id = ids.new()
    token = issue_token(key, rx_id)
    record = store_record(rx_id, prescriber_rpps, body, token.access_code, now)
    vault.put(rx_id, token.text)
    store.create(orjson.dumps(record), now_ms=now)
    content = {k: v for k, v in record.items() if k != "access_code"}
    del content["prescriber_may_view_dispensations"]
    content["created_at_ms"] = now
    return {
        "id": rx_id,
        "token": token.text,
        "access_code": token.access_code,
        "qr_svg_url": f"/v1/prescriptions/{rx_id}/qr.svg",
        "qr_png_url": f"/v1/prescriptions/{rx_id}/qr.png",
        "acknowledgement": acknowledge(key, content),
    }
