"""Line numbers: the HTTP contract numbers prescription lines from 0 (issue 5).

The store branch as merged numbers them from 1. Until the store follows the contract, the
service translates at this one place: ``+shift`` on the way in, ``-shift`` on every document
on the way out. The store's numbering is probed once at start-up (a throwaway in-memory
store), so when the store numbers from 0 the translation switches itself off and the store's
bytes are forwarded untouched again (the intended hot path: no Python re-serialisation).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ordonum import IdGenerator, SigningKey, Store, issue_token

__all__ = ["LineNumbers", "probe_store_first_line"]


def probe_store_first_line() -> int:
    """The number the store gives a prescription's first line (0 or 1)."""
    store = Store.memory()
    rx_id = IdGenerator(4_194_303).new()
    code = issue_token(SigningKey.generate("PRB1"), rx_id).access_code
    record = {
        "id": rx_id,
        "prescriber_rpps": "10000000009",
        "patient": {"nir": "180057512345627", "name": "Probe", "birth_date": "1980-05-17"},
        "valid_until_ms": int(time.time() * 1000) + 86_400_000,
        "lines": [
            {
                "label": "probe",
                "cip13": None,
                "dosage": "probe",
                "quantity": 1,
                "renewals": 0,
                "substitutable": True,
            }
        ],
        "prescriber_may_view_dispensations": True,
        "access_code": code,
    }
    try:
        doc = orjson.loads(store.create(orjson.dumps(record)))
    finally:
        store.close()
    first = int(doc["lines"][0]["line"])
    if first not in (0, 1):
        raise RuntimeError(f"the store numbers lines from {first}")
    return first


class LineNumbers:
    def __init__(self, store_first_line: int) -> None:
        self.shift = store_first_line

    def to_store(self, line: int) -> int:
        return line + self.shift

    def _fix_lines(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            line["line"] -= self.shift

    def _fix_doc(self, doc: dict[str, Any]) -> None:
        self._fix_lines(doc.get("lines", []))
        for dispensation in doc.get("dispensations", []):
            self._fix_lines(dispensation.get("lines", []))

    def document(self, raw: bytes) -> bytes:
        """A prescription document, a dispensation answer or ``{"dispensations": [...]}``."""
        if not self.shift:
            return raw
        doc = orjson.loads(raw)
        self._fix_doc(doc)
        return orjson.dumps(doc)
