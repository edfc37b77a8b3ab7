"""QR token texts: kept by the store with the creation; an earlier version's token file is
still read for the prescriptions created before, and never written."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from ordonum import IdGenerator, SigningKey, Store, issue_token
from ordonum.service.backend import EmbeddedBackend
from ordonum.service.ratelimit import Lockout
from ordonum.service.vault import LEGACY_FILE, TokenVault

from .conftest import nir, rpps

pytestmark = pytest.mark.anyio

KEY = SigningKey.generate("VT01")


def record(rx_id: str, code: str) -> dict[str, object]:
    return {
        "id": rx_id,
        "prescriber_rpps": rpps(),
        "patient": {"nir": nir(), "name": "Camille Martin", "birth_date": "1980-05-17"},
        "lines": [{"label": "x", "dosage": "y", "quantity": 2, "substitutable": True}],
        "prescriber_may_view_dispensations": True,
        "access_code": code,
    }


def legacy_file(data: Path, rows: dict[str, str]) -> Path:
    """A token file as the earlier versions wrote it."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / LEGACY_FILE
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, token TEXT NOT NULL)")
        db.executemany("INSERT INTO tokens VALUES (?, ?)", rows.items())
    db.close()
    return path


def backend(store: Store, legacy: TokenVault | None) -> EmbeddedBackend:
    return EmbeddedBackend(store, ThreadPoolExecutor(2), Lockout(5, 60, 300), 1, legacy=legacy)


def test_no_file_no_vault(tmp_path: Path) -> None:
    assert TokenVault.open_if_present(tmp_path) is None


def test_the_legacy_file_is_read_and_never_written(tmp_path: Path) -> None:
    path = legacy_file(tmp_path, {"A": "RX1:A"})
    vault = TokenVault.open_if_present(tmp_path)
    assert vault is not None
    assert (vault.get("A"), vault.get("B")) == ("RX1:A", None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        vault._db.execute("INSERT INTO tokens VALUES ('B', 'x')")
    vault.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id, token FROM tokens").fetchall() == [("A", "RX1:A")]
    db.close()


async def test_the_store_keeps_the_token_it_was_created_with(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    b = backend(store, None)
    token = issue_token(KEY, IdGenerator(1).new())
    await b.create(record(token.id, token.access_code), token.text, now_ms=1_750_000_000_000)
    assert await b.token(token.id) == token.text
    assert await b.token(IdGenerator(2).new()) is None  # unknown ID
    await b.close()
    reopened = Store.open(tmp_path / "store")
    assert reopened.qr_token(token.id) == token.text
    assert token.text.encode() not in reopened.get(token.id)  # never in a document
    reopened.close()
    assert not (tmp_path / LEGACY_FILE).exists()  # nothing beside the store


async def test_older_prescriptions_take_their_token_from_the_legacy_file(tmp_path: Path) -> None:
    store = Store.memory()
    gen = IdGenerator(1)
    old, new = issue_token(KEY, gen.new()), issue_token(KEY, gen.new())
    store.create(orjson.dumps(record(old.id, old.access_code)))  # before: no qr_token
    legacy_file(tmp_path, {old.id: old.text})
    b = backend(store, TokenVault.open_if_present(tmp_path))
    await b.create(record(new.id, new.access_code), new.text, now_ms=1_750_000_000_000)
    assert await b.token(old.id) == old.text
    assert await b.token(new.id) == new.text
    await b.close()
