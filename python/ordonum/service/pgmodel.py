"""The PostgreSQL backend's records: validation of the inputs and the JSON documents.

The same contract as the embedded store (``rust/src/store/model.rs`` and ``json.rs``), in
Python because the PostgreSQL backend keeps its state in tables rather than in the store's
binary content: the same inputs are accepted or refused with the same
:class:`~ordonum.InvalidRecord` messages (``field: message``), the same documents come out
with their keys in the same order, and the status follows the same rule. Lines are numbered
from 0, like the HTTP API. ``tests/service/test_pg_backend.py`` runs both backends on the
same inputs and compares the answers.

The access code digest is the store's (SHA-256 over ``ordonum/access-code/v1\\0`` and the
code's 16 bytes), so a prescription moves between backends with its paper still valid.
"""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import orjson

from ordonum import InvalidId, InvalidRecord, parse_access_code, parse_id

__all__ = [
    "Line",
    "Prescription",
    "access_digest",
    "add_months",
    "dispense_answer",
    "document",
    "parse_dispensation",
    "parse_record",
    "rfc3339",
    "status",
]

MAX_LINES = 32
MAX_QUANTITY = 9_999
MAX_RENEWALS = 11
MAX_TEXT = 200
MAX_DOSAGE = 500
MAX_KEY = 128
MAX_TIME_MS = 253_402_300_799_999
MONTHS_DEFAULT = 3
MONTHS_RENEWABLE = 12
DIGEST_DOMAIN = b"ordonum/access-code/v1\0"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def invalid(field: str, message: str) -> InvalidRecord:
    return InvalidRecord(f"{field}: {message}")


# -- time ----------------------------------------------------------------------------------


def rfc3339(ms: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ``, like the store."""
    t = _EPOCH + timedelta(milliseconds=min(ms, MAX_TIME_MS))
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def add_months(ms: int, months: int) -> int:
    """Calendar months later (UTC), the day clamped to the end of the month."""
    days, rem = divmod(ms, 86_400_000)
    d = date(1970, 1, 1) + timedelta(days=days)
    total = d.year * 12 + d.month - 1 + months
    year, month = divmod(total, 12)
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return (date(year, month + 1, day) - date(1970, 1, 1)).days * 86_400_000 + rem


def _parse_time(text: str) -> int | None:
    if len(text) < 20 or text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
        return None
    try:
        t = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    ms = (t - _EPOCH) // timedelta(milliseconds=1)
    return ms if 0 <= ms <= MAX_TIME_MS else None


# -- access codes --------------------------------------------------------------------------


def access_digest(code: str) -> bytes | None:
    """The digest of an access code in any accepted spelling; None if malformed."""
    try:
        text = parse_access_code(code)
    except (ValueError, TypeError):
        return None
    value = 0
    for ch in text.replace("-", ""):
        value = value << 5 | _CROCKFORD.index(ch)
    return hashlib.sha256(DIGEST_DOMAIN + value.to_bytes(16, "big")).digest()


# -- inputs --------------------------------------------------------------------------------


def _digits(field: str, value: Any, n: int) -> str:
    if not isinstance(value, str) or len(value) != n or not value.isascii() or not value.isdigit():
        raise invalid(field, f"expected {n} digits, got {_debug(value)}")
    return value


def _debug(value: Any) -> str:
    return orjson.dumps(value).decode() if isinstance(value, str) else repr(value)


def _nir(field: str, value: Any) -> str:
    up = value.upper() if isinstance(value, str) else ""
    ok = len(up) == 15 and all(
        c in "0123456789" or (i == 6 and c in "AB" and up[5] == "2") for i, c in enumerate(up)
    )
    if not ok:
        raise invalid(
            field,
            f"expected a NIR of 15 characters (digits, 2A/2B for Corsica), got {_debug(value)}",
        )
    return up


def _text(field: str, value: Any, lo: int, hi: int, newlines: bool) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"invalid type: expected a string, got {_debug(value)}")
    n = len(value)
    if n < lo or n > hi:
        raise invalid(field, f"length must be {lo} to {hi} characters, got {n}")
    for c in value:
        if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) and not (newlines and c == "\n"):
            raise invalid(field, f"control character {c!r} not allowed")
    return value


def _int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(field, f"expected a non-negative integer, got {_debug(value)}")
    return value


def _fields(field: str, obj: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise invalid(field, "expected an object")
    for key in obj:
        if key not in required and key not in optional:
            raise invalid(field, f"unknown field `{key}`")
    for key in sorted(required):
        if key not in obj:
            raise invalid(field, f"missing field `{key}`")
    return obj


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    cip13: str | None
    dosage: str
    quantity: int
    renewals: int
    substitutable: bool

    @property
    def allowance(self) -> int:
        return self.quantity * (1 + self.renewals)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "cip13": self.cip13,
            "dosage": self.dosage,
            "quantity": self.quantity,
            "renewals": self.renewals,
            "substitutable": self.substitutable,
        }


@dataclass(frozen=True, slots=True)
class Prescription:
    """The immutable content of a prescription, validated."""

    id: str
    created_at_ms: int
    valid_until_ms: int
    code_digest: bytes
    prescriber_rpps: str
    patient_nir: str
    patient_name: str
    birth_date: str
    lines: tuple[Line, ...]
    consent: bool

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id",
        "created_at_ms",
        "valid_until_ms",
        "code_digest",
        "prescriber_rpps",
        "patient_nir",
        "patient_name",
        "birth_date",
        "lines",
        "remaining",
        "consent",
    )
    """The ``prescriptions`` columns a new prescription fills, in :meth:`row`'s order."""

    def row(self) -> tuple[Any, ...]:
        """Its values for :attr:`COLUMNS` (lines as JSON text, remaining = the allowances)."""
        return (
            self.id,
            self.created_at_ms,
            self.valid_until_ms,
            self.code_digest,
            self.prescriber_rpps,
            self.patient_nir,
            self.patient_name,
            self.birth_date,
            orjson.dumps([line.as_dict() for line in self.lines]).decode(),
            [line.allowance for line in self.lines],
            self.consent,
        )


def parse_record(record: dict[str, Any], now_ms: int) -> Prescription:
    """Validate a creation record (the store's contract); :class:`InvalidRecord` names the
    field."""
    r = _fields(
        "record",
        record,
        {"id", "prescriber_rpps", "patient", "lines", "prescriber_may_view_dispensations"}
        | {"access_code"},
        {"valid_until_ms"},
    )
    try:
        rx_id = parse_id(r["id"]).text
    except (InvalidId, TypeError) as exc:
        raise invalid("id", str(exc)) from None
    rpps = _digits("prescriber_rpps", r["prescriber_rpps"], 11)
    patient = _fields("patient", r["patient"], {"nir", "name", "birth_date"}, set())
    nir = _nir("patient.nir", patient["nir"])
    name = _text("patient.name", patient["name"], 1, MAX_TEXT, False)
    birth = patient["birth_date"]
    try:
        ok = isinstance(birth, str) and len(birth) == 10 and date.fromisoformat(birth).year >= 1800
    except ValueError:
        ok = False
    if not ok:
        raise invalid("patient.birth_date", "expected a date YYYY-MM-DD")
    lines_in = r["lines"]
    if not isinstance(lines_in, list) or not 1 <= len(lines_in) <= MAX_LINES:
        n = len(lines_in) if isinstance(lines_in, list) else 0
        raise invalid("lines", f"1 to {MAX_LINES} lines, got {n}")
    try:
        parse_access_code(r["access_code"])
    except (ValueError, TypeError) as exc:
        raise invalid("access_code", str(exc)) from None
    digest = access_digest(r["access_code"])
    assert digest is not None
    renewable = any(isinstance(x, dict) and x.get("renewals", 0) for x in lines_in)
    months = MONTHS_RENEWABLE if renewable else MONTHS_DEFAULT
    max_valid = add_months(now_ms, months)
    valid = r.get("valid_until_ms")
    if valid is None:
        valid = add_months(now_ms, MONTHS_DEFAULT)
    else:
        valid = _int("valid_until_ms", valid)
        if valid <= now_ms:
            raise invalid("valid_until_ms", "must be later than the creation time")
        if valid > max_valid:
            raise invalid(
                "valid_until_ms",
                f"at most {months} months after creation ({rfc3339(max_valid)}),"
                f" got {rfc3339(min(valid, MAX_TIME_MS))}",
            )
    lines: list[Line] = []
    for i, raw in enumerate(lines_in):
        f = f"lines[{i}]"
        x = _fields(f, raw, {"label", "dosage", "quantity", "substitutable"}, {"cip13", "renewals"})
        label = _text(f"{f}.label", x["label"], 1, MAX_TEXT, False)
        dosage = _text(f"{f}.dosage", x["dosage"], 0, MAX_DOSAGE, True)
        quantity = _int(f"{f}.quantity", x["quantity"])
        if not 1 <= quantity <= MAX_QUANTITY:
            raise invalid(f"{f}.quantity", f"1 to {MAX_QUANTITY} units, got {quantity}")
        renewals = _int(f"{f}.renewals", x.get("renewals", 0))
        if renewals > MAX_RENEWALS:
            raise invalid(f"{f}.renewals", f"0 to {MAX_RENEWALS}, got {renewals}")
        cip13 = x.get("cip13")
        if cip13 is not None:
            cip13 = _digits(f"{f}.cip13", cip13, 13)
        if not isinstance(x["substitutable"], bool):
            raise invalid(f"{f}.substitutable", "expected a boolean")
        lines.append(Line(label, cip13, dosage, quantity, renewals, x["substitutable"]))
    if not isinstance(r["prescriber_may_view_dispensations"], bool):
        raise invalid("prescriber_may_view_dispensations", "expected a boolean")
    return Prescription(
        id=rx_id,
        created_at_ms=now_ms,
        valid_until_ms=valid,
        code_digest=digest,
        prescriber_rpps=rpps,
        patient_nir=nir,
        patient_name=name,
        birth_date=birth,
        lines=tuple(lines),
        consent=r["prescriber_may_view_dispensations"],
    )


def parse_dispensation(record: dict[str, Any], key: str) -> tuple[str, str, list[dict[str, Any]]]:
    """Validate a dispensation on its own: ``(finess, rpps, lines as rendered)``."""
    if not key or len(key) > MAX_KEY or not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise invalid(
            "idempotency_key",
            f"expected 1 to {MAX_KEY} printable ASCII characters without spaces",
        )
    r = _fields("record", record, {"pharmacy_finess", "pharmacist_rpps", "lines"}, set())
    finess = _digits("pharmacy_finess", r["pharmacy_finess"], 9)
    rpps = _digits("pharmacist_rpps", r["pharmacist_rpps"], 11)
    lines_in = r["lines"]
    if not isinstance(lines_in, list) or not 1 <= len(lines_in) <= MAX_LINES:
        n = len(lines_in) if isinstance(lines_in, list) else 0
        raise invalid("lines", f"1 to {MAX_LINES} lines, got {n}")
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(lines_in):
        f = f"lines[{i}]"
        x = _fields(f, raw, {"line", "quantity", "intervention"}, {"cip13"})
        n = _int(f"{f}.line", x["line"])
        if n >= MAX_LINES:
            raise invalid(f"{f}.line", f"line numbers run from 0 to {MAX_LINES - 1}, got {n}")
        if any(o["line"] == n for o in out):
            raise invalid(f"{f}.line", f"line {n} appears twice")
        quantity = _int(f"{f}.quantity", x["quantity"])
        if not 1 <= quantity <= MAX_QUANTITY:
            raise invalid(f"{f}.quantity", f"1 to {MAX_QUANTITY} units, got {quantity}")
        cip13 = x.get("cip13")
        if cip13 is not None:
            cip13 = _digits(f"{f}.cip13", cip13, 13)
        iv = _fields(
            f"{f}.intervention", x["intervention"], {"kind"}, {"motif"} | {"prescriber_agreed_at"}
        )
        kind, motif = iv["kind"], iv.get("motif")
        if kind not in ("none", "substitution", "adjustment"):
            raise invalid(f"{f}.intervention.kind", f"unknown variant {_debug(kind)}")
        if kind == "adjustment":
            if motif is None:
                raise invalid(f"{f}.intervention.motif", "an adjustment needs a motif code")
            if (
                not isinstance(motif, str)
                or not 1 <= len(motif) <= 16
                or not all(c.isascii() and (c.isalnum() or c in "-_") for c in motif)
            ):
                raise invalid(
                    f"{f}.intervention.motif",
                    "a motif code is 1 to 16 letters, digits, '-' or '_'",
                )
        elif motif is not None:
            raise invalid(f"{f}.intervention.motif", "only an adjustment has a motif")
        if kind == "substitution" and cip13 is None:
            raise invalid(f"{f}.cip13", "a substitution names the delivered product (cip13)")
        agreed = iv.get("prescriber_agreed_at")
        agreed_text = None
        if agreed is not None:
            ms = _parse_time(agreed) if isinstance(agreed, str) else None
            if ms is None:
                raise invalid(f"{f}.intervention.prescriber_agreed_at", "expected an RFC 3339 time")
            agreed_text = rfc3339(ms)
        out.append(
            {
                "line": n,
                "quantity": quantity,
                "cip13": cip13,
                "intervention": {
                    "kind": kind,
                    "motif": motif,
                    "prescriber_agreed_at": agreed_text,
                },
            }
        )
    return finess, rpps, out


# -- documents -----------------------------------------------------------------------------


def status(
    cancelled: bool,
    lines: list[dict[str, Any]],
    remaining: list[int],
    count: int,
    valid_until_ms: int,
    now_ms: int,
) -> str:
    """Cancelled, then dispensed (stays so), then expired, then partially dispensed / active."""
    if cancelled:
        return "cancelled"
    if all(r <= 0 for r in remaining):
        return "dispensed"
    if now_ms > valid_until_ms:
        return "expired"
    return "partially_dispensed" if count else "active"


def dispensation_doc(
    rx_id: str, n: int, at_ms: int, finess: str, rpps: str, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "dispensation_id": f"{rx_id}/{n}",
        "at": rfc3339(at_ms),
        "pharmacy_finess": finess,
        "pharmacist_rpps": rpps,
        "lines": lines,
    }


def document(
    rx_id: str,
    row: Any,
    dispensations: list[dict[str, Any]],
    now_ms: int,
) -> bytes:
    """The full document (the store's shape) from a ``prescriptions`` row."""
    lines: list[dict[str, Any]] = orjson.loads(row["lines"])
    remaining: list[int] = list(row["remaining"])
    st = status(
        row["cancelled_at_ms"] is not None,
        lines,
        remaining,
        row["dispensation_count"],
        row["valid_until_ms"],
        now_ms,
    )
    return orjson.dumps(
        {
            "id": rx_id,
            "status": st,
            "created_at": rfc3339(row["created_at_ms"]),
            "valid_until": rfc3339(row["valid_until_ms"]),
            "prescriber": {"rpps": row["prescriber_rpps"]},
            "patient": {
                "nir": row["patient_nir"],
                "name": row["patient_name"],
                "birth_date": row["birth_date"],
            },
            "prescriber_may_view_dispensations": row["consent"],
            "lines": [
                {"line": i, **line, "remaining": remaining[i]} for i, line in enumerate(lines)
            ],
            "dispensations": dispensations,
        }
    )


def dispense_answer(rx_id: str, n: int, remaining: list[int], replayed: bool) -> bytes:
    return orjson.dumps(
        {
            "dispensation_id": f"{rx_id}/{n}",
            "status": "dispensed" if all(r == 0 for r in remaining) else "partially_dispensed",
            "lines": [{"line": i, "remaining": r} for i, r in enumerate(remaining)],
            "replayed": replayed,
        }
    )
