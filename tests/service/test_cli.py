"""The ``ordonum`` command: keys, tokens, issue, verify, demo (in process, through ``main``)."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
import zxingcpp
from ordonum import Store, verify_token
from ordonum.cli import main
from ordonum.service.keys import load_qr_keys
from PIL import Image

from .conftest import nir, prescription_body, rpps


def test_token_prints_only_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    assert (
        main(
            [
                "token",
                "--role",
                "pharmacist",
                "--id",
                "750000010",
                "--rpps",
                "10000000017",
                "--data",
                data,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    claims = jwt.decode(out.strip(), options={"verify_signature": False})
    assert claims["finess"] == "750000010"
    assert claims["rpps"] == "10000000017"
    assert claims["role"] == "pharmacist"
    assert (
        main(
            [
                "token",
                "--role",
                "patient",
                "--id",
                "180057512345627",
                "--ttl",
                "-60",
                "--data",
                data,
            ]
        )
        == 0
    )
    expired = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert expired["exp"] < expired["iat"]
    assert main(["token", "--role", "prescriber", "--id", "10000000000", "--data", data]) == 1
    assert "rpps" in capsys.readouterr().err.lower()


def test_issue_verify_and_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    body = tmp_path / "rx.json"
    body.write_text(json.dumps(prescription_body(nir())))
    png = tmp_path / "rx.png"
    assert main(["issue", str(body), "--rpps", rpps(), "--qr", str(png), "--data", str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    decoded = zxingcpp.read_barcodes(Image.open(png))
    assert [d.text for d in decoded] == [out["token"]]

    assert main(["keys", "new", "--kid", "FR02", "--data", str(data)]) == 0
    assert main(["keys", "new", "--kid", "FR02", "--data", str(data)]) == 1  # never overwritten
    keys = load_qr_keys(data / "keys")
    assert keys.signing.kid == "FR02"
    assert sorted(keys.keyring.kids) == ["DEV1", "FR02"]
    capsys.readouterr()
    assert main(["verify", out["token"], "--data", str(data)]) == 0  # old kid still trusted
    assert json.loads(capsys.readouterr().out)["id"] == out["id"]
    tampered = out["token"][:-1] + ("0" if out["token"][-1] != "0" else "1")
    assert main(["verify", tampered, "--data", str(data)]) == 1
    assert capsys.readouterr().err.startswith("invalid: ")


def test_demo_loads_valid_prescriptions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tokens = tmp_path / "tokens.tsv"
    assert (
        main(
            ["demo", "--count", "300", "--seed", "7", "--data", str(data), "--tokens", str(tokens)]
        )
        == 0
    )
    rows = [line.split("\t") for line in tokens.read_text().splitlines()[1:]]
    assert len(rows) == 300
    keyring = load_qr_keys(data / "keys").keyring
    store = Store.open(data / "store")
    try:
        assert len(store) == 300
        for rx_id, token, code, prescriber, patient in rows[:20]:
            assert verify_token(token, keyring).id == rx_id
            doc = json.loads(store.scan(rx_id, code, actor="test"))
            assert doc["prescriber"]["rpps"] == prescriber
            assert doc["patient"]["nir"] == patient
            assert all(line["cip13"].startswith("34009") for line in doc["lines"])
    finally:
        store.close()
