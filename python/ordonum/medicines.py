"""The French medicine packs bundled with ordonum (ANSM open data, see ``data/README.md``).

20,739 real packs, marketed or withdrawn, each with its CIP13 pack code: realistic
prescription lines for demos and load tests, and a corpus for the CIP13 validator.

>>> from ordonum import medicines
>>> packs = medicines.load()
>>> packs[0].cip13
'3400949497294'
>>> medicines.by_cip13()["3400949497294"].cis
'60002283'
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

__all__ = ["COLUMNS", "Medicine", "by_cip13", "load"]

COLUMNS = ("cip13", "cis", "name", "form", "route", "presentation", "marketing")
"""The columns of the bundled file, in order (all of them are kept)."""

_FILE = "medicines.tsv.gz"


@dataclass(frozen=True, slots=True)
class Medicine:
    """One medicine pack (a *présentation* in ANSM terms)."""

    cip13: str
    """The 13-digit pack code printed on the box (``34009`` + 7 digits + EAN-13 key)."""
    cis: str
    """The 8-digit code of the medicine (several packs share one)."""
    name: str
    """The medicine's name with strength and form, e.g. ``'ANASTROZOLE ACCORD 1 mg, ...'``."""
    form: str
    """Pharmaceutical form, e.g. ``'comprimé pelliculé'``."""
    route: str
    """Route(s) of administration, e.g. ``'orale'``."""
    presentation: str
    """The pack, e.g. ``'plaquette(s) PVC PVDC aluminium de 30 comprimé(s)'``."""
    marketing: Literal["marketed", "withdrawn"]
    """Whether the pack was on the market at the time of the extract (June 2022)."""

    @property
    def marketed(self) -> bool:
        """``marketing == "marketed"``."""
        return self.marketing == "marketed"


def _parse(line: str, lineno: int) -> Medicine:
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{_FILE} line {lineno}: {len(fields)} fields, expected {len(COLUMNS)}")
    cip13, cis, name, form, route, presentation, marketing = fields
    if marketing == "marketed":
        status: Literal["marketed", "withdrawn"] = "marketed"
    elif marketing == "withdrawn":
        status = "withdrawn"
    else:
        raise ValueError(f"{_FILE} line {lineno}: marketing is {marketing!r}")
    return Medicine(cip13, cis, name, form, route, presentation, status)


@cache
def _packs() -> tuple[Medicine, ...]:
    raw = (resources.files("ordonum") / "data" / _FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    if tuple(lines[0].split("\t")) != COLUMNS:
        raise ValueError(f"{_FILE}: unexpected header {lines[0]!r}")
    return tuple(_parse(line, i) for i, line in enumerate(lines[1:], start=2))


def load() -> list[Medicine]:
    """Every bundled pack, in file order (read once, then cached; the list is yours)."""
    return list(_packs())


@cache
def _index() -> dict[str, Medicine]:
    return {m.cip13: m for m in _packs()}


def by_cip13() -> dict[str, Medicine]:
    """The packs keyed by CIP13 (codes are unique in the file). A new dict on each call."""
    return dict(_index())
