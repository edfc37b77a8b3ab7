"""The bundled ANSM medicines list and the CIP13 validator on real pack codes."""

import gzip
from importlib import resources

from ordonum import checks, medicines


def test_every_real_cip13_is_valid() -> None:
    packs = medicines.load()
    assert len(packs) == 20_739
    codes = [m.cip13 for m in packs]
    assert checks.are_valid_cip13(codes) == [True] * len(codes)
    assert all(checks.is_valid_cip13(c) for c in codes)
    assert all(checks.validate_cip13(c) == c for c in codes[:2000])


def test_columns_and_values() -> None:
    packs = medicines.load()
    first = packs[0]
    assert first == medicines.Medicine(
        cip13="3400949497294",
        cis="60002283",
        name="ANASTROZOLE ACCORD 1 mg, comprimé pelliculé",
        form="comprimé pelliculé",
        route="orale",
        presentation="plaquette(s) PVC PVDC aluminium de 30 comprimé(s)",
        marketing="marketed",
    )
    assert first.marketed
    assert all(len(m.cis) == 8 and m.cis.isdigit() for m in packs)
    assert all(m.name and m.form for m in packs)
    counts = {s: sum(m.marketing == s for m in packs) for s in ("marketed", "withdrawn")}
    assert counts == {"marketed": 17_497, "withdrawn": 3_242}


def test_index_and_caching() -> None:
    index = medicines.by_cip13()
    assert len(index) == 20_739
    assert index["3400933208639"].marketing == "withdrawn"
    a, b = medicines.load(), medicines.load()
    assert a == b
    assert a is not b
    a.clear()
    assert len(medicines.load()) == 20_739


def test_all_columns_are_shipped_with_their_source() -> None:
    data = resources.files("ordonum") / "data"
    header = gzip.decompress((data / "medicines.tsv.gz").read_bytes()).split(b"\n", 1)[0]
    assert tuple(header.decode().split("\t")) == medicines.COLUMNS
    notice = (data / "README.md").read_text(encoding="utf-8")
    assert "ANSM" in notice
    assert "Base de données publique des médicaments" in notice
