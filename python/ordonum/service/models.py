"""Request and response bodies of the HTTP contract (v1).

Requests refuse unknown fields (``extra="forbid"``: no client-set status or pharmacy) and
validate every identifier with :mod:`ordonum.checks` (values are normalised to the compact
form). Responses allow added fields: v1 may grow, never rename.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from ordonum import checks

__all__ = [
    "AccessLogOut",
    "Acknowledgement",
    "CancelOut",
    "ConsentIn",
    "ConsentOut",
    "CreateIn",
    "CreateOut",
    "DispensationsOut",
    "DispenseIn",
    "DispenseOut",
    "MyPrescriptionsOut",
    "PrescriptionDoc",
    "ScanByCode",
    "ScanByToken",
]

Nir = Annotated[str, Field(min_length=13, max_length=21), AfterValidator(checks.validate_nir)]
Cip13 = Annotated[str, Field(min_length=13, max_length=17), AfterValidator(checks.validate_cip13)]
Status = Literal["active", "partially_dispensed", "dispensed", "cancelled", "expired"]
IdText = Annotated[str, Field(min_length=1, max_length=40, examples=["0HRM-3A6V-2M8Q-0000-K"])]
TokenText = Annotated[str, Field(min_length=1, max_length=400)]
AccessCodeText = Annotated[str, Field(min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- requests -----------------------------------------------------------------------------


class PatientIn(_In):
    nir: Nir
    name: str = Field(min_length=1, max_length=200)
    birth_date: date

    @model_validator(mode="after")
    def _born(self) -> PatientIn:
        if self.birth_date > date.today() or self.birth_date.year < 1880:
            raise ValueError("birth_date must be a past date after 1880")
        return self


class LineIn(_In):
    label: str = Field(min_length=1, max_length=200)
    cip13: Cip13 | None = None
    dosage: str = Field(min_length=1, max_length=500)
    quantity: int = Field(ge=1, le=9_999)
    renewals: int = Field(default=0, ge=0, le=12)
    substitutable: bool = True


class CreateIn(_In):
    patient: PatientIn
    lines: list[LineIn] = Field(min_length=1, max_length=50)
    valid_days: int = Field(default=90, ge=1, le=365)
    prescriber_may_view_dispensations: bool = True


class ScanByToken(_In):
    """What the scanner read from the QR code."""

    token: TokenText


class ScanByCode(_In):
    """ID and access code typed by hand."""

    id: IdText
    access_code: AccessCodeText


class Intervention(_In):
    kind: Literal["none", "substitution", "adjustment"] = "none"
    motif: str | None = Field(default=None, min_length=1, max_length=200)
    prescriber_agreed_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _motif(self) -> Intervention:
        if (self.kind == "adjustment") != (self.motif is not None):
            raise ValueError("an adjustment needs a motif, and only an adjustment has one")
        return self


class DispenseLineIn(_In):
    line: int = Field(ge=0, le=49)
    quantity: int = Field(ge=1, le=9_999)
    cip13: Cip13 | None = None
    intervention: Intervention = Field(default_factory=Intervention)


class DispenseIn(_In):
    """Exactly one of ``access_code`` (typed) or ``token`` (scanned) proves the paper."""

    access_code: AccessCodeText | None = None
    token: TokenText | None = None
    lines: list[DispenseLineIn] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _one_proof(self) -> DispenseIn:
        if (self.access_code is None) == (self.token is None):
            raise ValueError("give exactly one of access_code or token")
        if len({line.line for line in self.lines}) != len(self.lines):
            raise ValueError("each line may appear once")
        return self


class ConsentIn(_In):
    prescriber_may_view_dispensations: bool


# --- responses ----------------------------------------------------------------------------


class Acknowledgement(_Out):
    received_at: str
    digest: str = Field(description="SHA-256 of the canonical content JSON, lowercase hex")
    signature: str = Field(description="Ed25519 by the QR signing key, base64url, no padding")
    kid: str


class CreateOut(_Out):
    id: str
    token: str
    access_code: str
    qr_svg_url: str
    qr_png_url: str
    acknowledgement: Acknowledgement


class PrescriberOut(_Out):
    rpps: str


class PatientOut(_Out):
    nir: str
    name: str
    birth_date: str


class LineOut(_Out):
    line: int
    label: str
    cip13: str | None
    dosage: str
    quantity: int
    renewals: int
    substitutable: bool
    remaining: int


class InterventionOut(_Out):
    kind: str
    motif: str | None = None
    prescriber_agreed_at: str | None = None


class DispensedLineOut(_Out):
    line: int
    quantity: int
    cip13: str | None = None
    intervention: InterventionOut


class DispensationOut(_Out):
    dispensation_id: str
    at: str
    pharmacy_finess: str
    pharmacist_rpps: str
    lines: list[DispensedLineOut]


class PrescriptionDoc(_Out):
    id: str
    status: Status
    created_at: str
    valid_until: str
    prescriber: PrescriberOut
    patient: PatientOut
    prescriber_may_view_dispensations: bool
    lines: list[LineOut]
    dispensations: list[DispensationOut]


class RemainingOut(_Out):
    line: int
    remaining: int


class DispenseOut(_Out):
    dispensation_id: str
    status: Status
    lines: list[RemainingOut]
    replayed: bool = Field(
        default=False, description="true when this is the stored answer to a repeated key"
    )


class DispensationsOut(_Out):
    dispensations: list[DispensationOut]


class CancelOut(_Out):
    id: str
    status: Status


class ConsentOut(_Out):
    id: str
    prescriber_may_view_dispensations: bool


class MyPrescriptionsOut(_Out):
    prescriptions: list[PrescriptionDoc]
    next_cursor: str | None = Field(description="pass as ?before= for the next (older) page")


class AccessLogEntry(_Out):
    at: str
    actor: str
    action: str


class AccessLogOut(_Out):
    access_log: list[AccessLogEntry]


class Health(_Out):
    status: Literal["ok"]
    prescriptions: int = Field(description="held by the store (PostgreSQL: an estimate)")
    store: Literal["embedded", "postgresql"]
