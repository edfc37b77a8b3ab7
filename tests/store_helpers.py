"""Records and helpers shared by the store tests and the crash child process."""

from __future__ import annotations

import json
from typing import Any

T0 = 1_750_000_000_000  # 2025-06-15T15:06:40Z
CODE = "0123-4567-89AB-CDEF-GHJK-MNPQ-RS"
OTHER_CODE = "7ZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZ"
RPPS = "10003456789"
NIR = "180027512345678"


def record(
    rx_id: str, *, nir: str = NIR, lines: list[tuple[int, int]] | None = None, **extra: Any
) -> str:
    """A creation record; ``lines`` are (quantity, renewals) pairs."""
    body: dict[str, Any] = {
        "id": rx_id,
        "prescriber_rpps": RPPS,
        "patient": {"nir": nir, "name": "Zoé Dupont", "birth_date": "1980-02-29"},
        "lines": [
            {
                "label": f"Amoxicilline {i}",
                "cip13": "3400930000001" if i == 0 else None,
                "dosage": "1 gélule matin et soir",
                "quantity": q,
                "renewals": r,
                "substitutable": i == 0,
            }
            for i, (q, r) in enumerate([(2, 0)] if lines is None else lines)
        ],
        "prescriber_may_view_dispensations": True,
        "access_code": CODE,
    }
    body.update(extra)
    return json.dumps(body)


def dispensation(*lines: tuple[int, int], kind: str = "none", **line_extra: Any) -> str:
    """A dispensation of (line, quantity) pairs."""
    return json.dumps(
        {
            "pharmacy_finess": "750000001",
            "pharmacist_rpps": "20000000001",
            "lines": [
                {
                    "line": line,
                    "quantity": q,
                    "cip13": None,
                    "intervention": {"kind": kind, "motif": None, "prescriber_agreed_at": None},
                    **line_extra,
                }
                for line, q in lines
            ],
        }
    )
