"""The prescription store's Python API: lifecycle, rules, errors with their exact messages."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import ordonum
import pytest
from ordonum import Conflict, IdGenerator, InvalidId, InvalidRecord, NotFound, Store, StoreFailed
from store_helpers import CODE, NIR, OTHER_CODE, RPPS, T0, dispensation, record

DAY = 86_400_000


def load(b: bytes) -> Any:
    assert isinstance(b, bytes)
    return json.loads(b)


@pytest.fixture
def gen() -> IdGenerator:
    return IdGenerator(42)


@pytest.fixture(params=["memory", "durable"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return Store.memory()
    return Store.open(tmp_path / "store")


def test_create_returns_the_document(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    doc = load(store.create(record(rx, lines=[(2, 1), (1, 0)]), now_ms=T0))
    assert doc == {
        "id": rx,
        "status": "active",
        "created_at": "2025-06-15T15:06:40.000Z",
        "valid_until": "2025-09-15T15:06:40.000Z",
        "prescriber": {"rpps": RPPS},
        "patient": {"nir": NIR, "name": "Zoé Dupont", "birth_date": "1980-02-29"},
        "prescriber_may_view_dispensations": True,
        "lines": [
            {
                "line": 0,
                "label": "Amoxicilline 0",
                "cip13": "3400930000001",
                "dosage": "1 gélule matin et soir",
                "quantity": 2,
                "renewals": 1,
                "substitutable": True,
                "remaining": 4,
            },
            {
                "line": 1,
                "label": "Amoxicilline 1",
                "cip13": None,
                "dosage": "1 gélule matin et soir",
                "quantity": 1,
                "renewals": 0,
                "substitutable": False,
                "remaining": 1,
            },
        ],
        "dispensations": [],
    }
    assert len(store) == 1
    assert "access_code" not in store.get(rx).decode()
    assert CODE not in store.get(rx).decode()


def test_lifecycle_with_renewals(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx, lines=[(2, 1), (1, 0)]), now_ms=T0)
    first = load(
        store.dispense(
            rx, dispensation((0, 2)), idempotency_key="a", access_code=CODE, now_ms=T0 + 1
        )
    )
    assert first == {
        "dispensation_id": f"{rx}/1",
        "status": "partially_dispensed",
        "lines": [{"line": 0, "remaining": 2}, {"line": 1, "remaining": 1}],
        "replayed": False,
    }
    assert load(store.get(rx, now_ms=T0 + 1))["status"] == "partially_dispensed"
    # The renewal: the same line again, up to quantity x (1 + renewals).
    store.dispense(
        rx, dispensation((0, 2), (1, 1)), idempotency_key="b", access_code=CODE, now_ms=T0 + 2
    )
    doc = load(store.get(rx, now_ms=T0 + 3))
    assert doc["status"] == "dispensed"
    assert [ln["remaining"] for ln in doc["lines"]] == [0, 0]
    assert [d["dispensation_id"] for d in doc["dispensations"]] == [f"{rx}/1", f"{rx}/2"]
    assert doc["dispensations"][0] == {
        "dispensation_id": f"{rx}/1",
        "at": "2025-06-15T15:06:40.001Z",
        "pharmacy_finess": "750000001",
        "pharmacist_rpps": "20000000001",
        "lines": [
            {
                "line": 0,
                "quantity": 2,
                "cip13": None,
                "intervention": {"kind": "none", "motif": None, "prescriber_agreed_at": None},
            }
        ],
    }
    assert load(store.dispensations(rx)) == {"dispensations": doc["dispensations"]}
    with pytest.raises(Conflict, match=rf"^prescription {rx} is already fully dispensed$"):
        store.dispense(
            rx, dispensation((0, 1)), idempotency_key="c", access_code=CODE, now_ms=T0 + 4
        )
    with pytest.raises(
        Conflict, match=rf"^prescription {rx} is fully dispensed and can no longer be cancelled$"
    ):
        store.cancel(rx, prescriber_rpps=RPPS, now_ms=T0 + 4)


def test_idempotency_key_returns_the_first_answer_and_writes_nothing(
    store: Store, gen: IdGenerator
) -> None:
    rx = gen.new()
    store.create(record(rx, lines=[(5, 0)]), now_ms=T0)
    a = store.dispense(
        rx, dispensation((0, 2)), idempotency_key="k", access_code=CODE, now_ms=T0 + 1
    )
    store.dispense(rx, dispensation((0, 1)), idempotency_key="k2", access_code=CODE, now_ms=T0 + 2)
    records = store.stats()["records"]
    again = load(
        store.dispense(
            rx, dispensation((0, 2)), idempotency_key="k", access_code=CODE, now_ms=T0 + 3
        )
    )
    assert again == {**load(a), "replayed": True}
    assert again["lines"] == [{"line": 0, "remaining": 3}]  # as of the first answer
    assert store.stats()["records"] == records
    assert len(load(store.dispensations(rx))["dispensations"]) == 2
    with pytest.raises(
        Conflict, match=r'^idempotency key "k" was already used for a different dispensation$'
    ):
        store.dispense(
            rx, dispensation((0, 1)), idempotency_key="k", access_code=CODE, now_ms=T0 + 4
        )


def test_over_dispensing_is_refused_whole(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx, lines=[(2, 0), (1, 0)]), now_ms=T0)
    with pytest.raises(
        Conflict, match=r"^over-dispensing: line 1 has 1 units remaining, 2 requested$"
    ):
        store.dispense(
            rx, dispensation((0, 1), (1, 2)), idempotency_key="k", access_code=CODE, now_ms=T0
        )
    assert [ln["remaining"] for ln in load(store.get(rx))["lines"]] == [2, 1]  # all lines or none


def test_expired_is_derived_from_valid_until(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx, valid_until_ms=T0 + DAY), now_ms=T0)
    assert load(store.get(rx, now_ms=T0 + DAY))["status"] == "active"
    assert load(store.get(rx, now_ms=T0 + DAY + 1))["status"] == "expired"
    with pytest.raises(Conflict, match=rf"^prescription {rx} expired at 2025-06-16T15:06:40.000Z$"):
        store.dispense(
            rx, dispensation((0, 1)), idempotency_key="k", access_code=CODE, now_ms=T0 + DAY + 1
        )


def test_valid_until_limits(store: Store, gen: IdGenerator) -> None:
    with pytest.raises(InvalidRecord, match=r"^valid_until_ms: at most 3 months after creation"):
        store.create(record(gen.new(), valid_until_ms=T0 + 100 * DAY), now_ms=T0)
    # Renewable prescriptions may run up to 12 months.
    rx = gen.new()
    store.create(record(rx, lines=[(1, 3)], valid_until_ms=T0 + 300 * DAY), now_ms=T0)
    with pytest.raises(
        InvalidRecord, match=r"^valid_until_ms: must be later than the creation time$"
    ):
        store.create(record(gen.new(), valid_until_ms=T0), now_ms=T0)


def test_cancel(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx), now_ms=T0)
    with pytest.raises(Conflict, match=rf"^prescription {rx} was issued by another prescriber$"):
        store.cancel(rx, prescriber_rpps="10000000000", now_ms=T0)
    assert store.cancel(rx, prescriber_rpps=RPPS, now_ms=T0) == "cancelled"
    assert store.cancel(rx, prescriber_rpps=RPPS, now_ms=T0) == "cancelled"  # idempotent
    assert load(store.get(rx))["status"] == "cancelled"
    with pytest.raises(Conflict, match=rf"^prescription {rx} is cancelled$"):
        store.dispense(rx, dispensation((0, 1)), idempotency_key="k", access_code=CODE)


def test_consent_and_owner(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx), now_ms=T0)
    assert store.owner(rx) == (RPPS, NIR, True)
    store.set_consent(rx, False, now_ms=T0)
    assert store.owner(rx) == (RPPS, NIR, False)
    assert load(store.get(rx))["prescriber_may_view_dispensations"] is False


def test_the_qr_token_text_is_kept_apart_from_the_document(store: Store, gen: IdGenerator) -> None:
    rx, bare = gen.new(), gen.new()
    token = "RX1:/ABC $%*+-./:" + "Q" * 120
    store.create(record(rx, qr_token=token), now_ms=T0)
    store.create(record(bare), now_ms=T0)
    assert store.qr_token(rx) == token
    assert store.qr_token(bare) is None
    assert b"RX1:" not in store.get(rx)
    assert b"qr_token" not in store.get(rx)
    with pytest.raises(NotFound):
        store.qr_token(gen.new())
    with pytest.raises(InvalidId):
        store.qr_token("not an id")
    with pytest.raises(TypeError):
        store.qr_token(42)  # type: ignore[arg-type]
    with pytest.raises(
        InvalidRecord, match=r"^qr_token: expected 1 to 512 printable ASCII characters$"
    ):
        store.create(record(gen.new(), qr_token="line\nbreak"), now_ms=T0)


def test_scan_checks_the_code_and_logs_the_access(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx), now_ms=T0)
    doc = load(
        store.scan(rx, CODE.lower().replace("-", ""), actor="finess:750000001", now_ms=T0 + 5)
    )
    assert doc["id"] == rx
    store.scan(rx, CODE, actor="finess:750000002", now_ms=T0 + 6)
    assert load(store.access_log(rx)) == {
        "access_log": [
            {"at": "2025-06-15T15:06:40.005Z", "actor": "finess:750000001", "action": "scan"},
            {"at": "2025-06-15T15:06:40.006Z", "actor": "finess:750000002", "action": "scan"},
        ]
    }
    missing = gen.new()
    messages = set()
    for rx_id, code in [(rx, OTHER_CODE), (missing, CODE), (rx, "not a code"), (rx, "")]:
        with pytest.raises(NotFound) as e:
            store.scan(rx_id, code, actor="x")
        messages.add(str(e.value))
        with pytest.raises(NotFound) as e:
            store.dispense(rx_id, dispensation((0, 1)), idempotency_key="k", access_code=code)
        messages.add(str(e.value))
    assert messages == {"no prescription with this ID and access code"}
    assert len(load(store.access_log(rx))["access_log"]) == 2


def test_create_many_equals_creating_one_by_one(store: Store, gen: IdGenerator) -> None:
    ids = [gen.new() for _ in range(50)]
    recs = [record(rx, lines=[(1 + i % 3, i % 2)] * (1 + i % 4)) for i, rx in enumerate(ids)]
    reference = Store.memory()
    for r in recs:
        reference.create(r, now_ms=T0)
    # bytes and str, any iterable
    assert store.create_many(iter([r.encode() for r in recs[:20]]), now_ms=T0) == 20
    assert store.create_many(recs[20:], now_ms=T0) == 30
    assert store.create_many([], now_ms=T0) == 0
    assert len(store) == 50
    assert store.get_many(ids, now_ms=T0 + 1) == reference.get_many(ids, now_ms=T0 + 1)
    assert store.by_patient(NIR, limit=100) == reference.by_patient(NIR, limit=100)


def test_create_many_is_all_or_nothing_and_names_the_bad_record(
    store: Store, gen: IdGenerator
) -> None:
    ids = [gen.new() for _ in range(4)]
    recs = [record(rx) for rx in ids]
    bad = json.loads(recs[2])
    bad["lines"][0]["quantity"] = 0
    with pytest.raises(
        InvalidRecord, match=r"^records\[2\]\.lines\[0\]\.quantity: 1 to 9999 units, got 0$"
    ):
        store.create_many([recs[0], recs[1], json.dumps(bad)], now_ms=T0)
    with pytest.raises(InvalidRecord, match=r"^records\[1\]: trailing characters at line 1"):
        store.create_many([recs[0], recs[1] + " x"], now_ms=T0)
    with pytest.raises(TypeError, match=r"^records\[1\] must be bytes or str, not int$"):
        store.create_many([recs[0], 5], now_ms=T0)  # type: ignore[list-item]
    assert len(store) == 0
    store.create(recs[1], now_ms=T0)
    with pytest.raises(Conflict, match=rf"^records\[1\]: prescription {ids[1]} already exists$"):
        store.create_many([recs[0], recs[1]], now_ms=T0)
    with pytest.raises(Conflict, match=rf"^records\[2\]: prescription {ids[0]} already exists$"):
        store.create_many([recs[0], recs[2], recs[0]], now_ms=T0)
    assert len(store) == 1
    with pytest.raises(NotFound):
        store.get(ids[0])
    # The refused IDs were released.
    assert store.create_many([recs[0], recs[2], recs[3]], now_ms=T0) == 3
    store.close()
    with pytest.raises(StoreFailed, match=r"^the store is closed$"):
        store.create_many([record(gen.new())], now_ms=T0)


def test_create_many_is_one_group_commit(tmp_path: Path, gen: IdGenerator) -> None:
    recs = [record(gen.new()) for _ in range(500)]
    with Store.open(tmp_path) as s:
        before = s.stats()
        assert s.create_many(recs, now_ms=T0) == 500
        after = s.stats()
        assert after["records"] - before["records"] == 500
        assert after["fsyncs"] - before["fsyncs"] <= 2  # one, unless a batch was in flight
    with Store.open(tmp_path) as s:
        assert len(s) == 500


def test_scan_is_logged_at_once_and_survives_reopen(tmp_path: Path, gen: IdGenerator) -> None:
    # A long sync delay: nothing is fsynced during the test unless someone waits for it.
    rx = gen.new()
    with Store.open(tmp_path, sync="delay", sync_delay_ms=10_000) as s:
        s.create(record(rx), now_ms=T0)
        fsyncs = s.stats()["fsyncs"]
        s.scan(rx, CODE, actor="finess:750000001", now_ms=T0 + 1)
        assert [a["actor"] for a in load(s.access_log(rx))["access_log"]] == ["finess:750000001"]
        assert s.stats()["fsyncs"] == fsyncs
    with Store.open(tmp_path) as s:
        assert load(s.access_log(rx))["access_log"] == [
            {"at": "2025-06-15T15:06:40.001Z", "actor": "finess:750000001", "action": "scan"}
        ]
        # Scans between checkpoints come back exactly once (snapshot + journal replay).
        s.scan(rx, CODE, actor="finess:750000002", now_ms=T0 + 2)
        s.checkpoint()
        s.scan(rx, CODE, actor="finess:750000003", now_ms=T0 + 3)
    with Store.open(tmp_path) as s:
        actors = [a["actor"] for a in load(s.access_log(rx))["access_log"]]
        assert actors == ["finess:750000001", "finess:750000002", "finess:750000003"]
        s.close()
        with pytest.raises(StoreFailed, match=r"^the store is closed$"):
            s.scan(rx, CODE, actor="finess:750000004")


def test_by_patient_newest_first_with_cursor(store: Store, gen: IdGenerator) -> None:
    mine = [gen.new() for _ in range(7)]
    other = gen.new()
    for rx in mine:
        store.create(record(rx), now_ms=T0)
    store.create(record(other, nir="2850575123456" + "12"), now_ms=T0)
    newest_first = mine[::-1]
    assert store.by_patient(NIR) == newest_first
    assert store.by_patient(NIR, limit=3) == newest_first[:3]
    assert store.by_patient(NIR, limit=3, before=newest_first[2]) == newest_first[3:6]
    assert store.by_patient(NIR, limit=3, before=mine[0]) == []
    assert store.by_patient("285057512345612") == [other]
    assert store.by_patient("100000000000000") == []


def test_errors_are_precise(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    with pytest.raises(NotFound, match=rf"^no prescription {rx}$"):
        store.get(rx)
    with pytest.raises(InvalidId):
        store.get("not-an-id")
    with pytest.raises(TypeError, match=r"^ID must be str, not int$"):
        store.get(12)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^record must be bytes or str, not dict$"):
        store.create({"id": rx})  # type: ignore[arg-type]
    cases = [
        (record(rx, extra=1), r"^extra: unknown field `extra`"),
        (record(rx, prescriber_rpps="123"), r'^prescriber_rpps: expected 11 digits, got "123"$'),
        (record(rx, lines=[]), r"^lines: 1 to 32 lines, got 0$"),
        (record(rx, lines=[(0, 0)]), r"^lines\[0\]\.quantity: 1 to 9999 units, got 0$"),
        (record(rx, lines=[(1, 12)]), r"^lines\[0\]\.renewals: 0 to 11, got 12$"),
        (record("ABCD", lines=[(1, 0)]), r"^id: an ID has 17 characters"),
        (record(rx, access_code="12"), r"^access_code: an access code has 26 characters"),
        ("{", r"^record: EOF while parsing an object"),
        (record(rx) + " x", r"^record: trailing characters at line 1 column"),
    ]
    for rec, message in cases:
        with pytest.raises(InvalidRecord, match=message):
            store.create(rec, now_ms=T0)
    bad_patient = json.loads(record(rx))
    bad_patient["patient"]["birth_date"] = "1980-02-30"
    with pytest.raises(InvalidRecord, match=r"^patient\.birth_date: expected a date YYYY-MM-DD$"):
        store.create(json.dumps(bad_patient), now_ms=T0)
    bad_patient["patient"] = {"nir": "1800", "name": "x", "birth_date": "1980-01-01"}
    with pytest.raises(InvalidRecord, match=r"^patient\.nir: expected a NIR of 15 characters"):
        store.create(json.dumps(bad_patient), now_ms=T0)
    assert len(store) == 0
    store.create(record(rx, lines=[(2, 0)]), now_ms=T0)
    with pytest.raises(Conflict, match=rf"^prescription {rx} already exists$"):
        store.create(record(rx), now_ms=T0)
    disp_cases = [
        (
            dispensation((2, 1)),
            r"^lines\[0\]\.line: the prescription has 1 lines, numbered from 0, got line 2$",
        ),
        (dispensation((0, 1), (0, 1)), r"^lines\[1\]\.line: line 0 appears twice$"),
        (dispensation((32, 1)), r"^lines\[0\]\.line: line numbers run from 0 to 31, got 32$"),
        (
            dispensation((0, 1), kind="adjustment"),
            r"^lines\[0\]\.intervention\.motif: an adjustment needs",
        ),
        (
            dispensation((0, 1), kind="swap"),
            r"^lines\[0\]\.intervention\.kind: unknown variant `swap`",
        ),
        (dispensation((0, 1), kind="substitution"), r"^lines\[0\]\.cip13: a substitution names"),
        (
            dispensation((0, 1), cip13="3400930000002"),
            r"^lines\[0\]\.intervention\.kind: the delivered cip13",
        ),
    ]
    for body, message in disp_cases:
        with pytest.raises(InvalidRecord, match=message):
            store.dispense(rx, body, idempotency_key="k", access_code=CODE, now_ms=T0)
    with pytest.raises(InvalidRecord, match=r"^idempotency_key: expected 1 to 128 printable ASCII"):
        store.dispense(rx, dispensation((0, 1)), idempotency_key="a b", access_code=CODE)
    with pytest.raises(InvalidRecord, match=r"^now_ms: time 253402300800000 ms is past year 9999$"):
        store.get(rx, now_ms=253_402_300_800_000)
    assert load(store.dispensations(rx)) == {"dispensations": []}


def test_substitution_and_adjustment_are_recorded(store: Store, gen: IdGenerator) -> None:
    rx = gen.new()
    store.create(record(rx, lines=[(2, 0), (2, 0)]), now_ms=T0)
    body = json.loads(dispensation((0, 1), (1, 1)))
    body["lines"][0]["cip13"] = "3400930000099"
    body["lines"][0]["intervention"] = {
        "kind": "substitution",
        "motif": None,
        "prescriber_agreed_at": None,
    }
    body["lines"][1]["intervention"] = {
        "kind": "adjustment",
        "motif": "POSO-1",
        "prescriber_agreed_at": "2025-06-15T17:00:00+02:00",
    }
    store.dispense(rx, json.dumps(body), idempotency_key="k", access_code=CODE, now_ms=T0)
    lines = load(store.dispensations(rx))["dispensations"][0]["lines"]
    assert lines[0]["cip13"] == "3400930000099"
    assert lines[0]["intervention"] == {
        "kind": "substitution",
        "motif": None,
        "prescriber_agreed_at": None,
    }
    assert lines[1]["intervention"] == {
        "kind": "adjustment",
        "motif": "POSO-1",
        "prescriber_agreed_at": "2025-06-15T15:00:00.000Z",
    }
    body["lines"] = [body["lines"][0] | {"line": 1}]
    with pytest.raises(Conflict, match=r"^line 1 is not substitutable$"):
        store.dispense(rx, json.dumps(body), idempotency_key="k2", access_code=CODE, now_ms=T0)


def test_durable_store_survives_reopen_and_checkpoint(tmp_path: Path, gen: IdGenerator) -> None:
    ids = [gen.new() for _ in range(20)]
    with Store.open(tmp_path, sync="delay", sync_delay_ms=5) as s:
        for i, rx in enumerate(ids):
            s.create(record(rx, lines=[(3, 0)]), now_ms=T0)
            s.dispense(
                rx, dispensation((0, 1)), idempotency_key="k", access_code=CODE, now_ms=T0 + 1
            )
            if i == 9:
                s.checkpoint()
        s.scan(ids[0], CODE, actor="p", now_ms=T0 + 2)
        docs = [s.get(rx, now_ms=T0 + 3) for rx in ids]
    with pytest.raises(StoreFailed, match=r"^the store is closed$"):
        s.create(record(gen.new()))
    s2 = Store.open(tmp_path)
    assert [s2.get(rx, now_ms=T0 + 3) for rx in ids] == docs
    assert s2.stats()["recovered_snapshot_entries"] == 10
    assert s2.get_many([ids[0], gen.new()], now_ms=T0 + 3) == [docs[0], None]
    with pytest.raises(StoreFailed, match=r"is already open in another process"):
        Store.open(tmp_path)
    s2.close()


def test_open_refuses_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^sync must be 'always' or 'delay', got \"never\"$"):
        Store.open(tmp_path, sync="never")
    with pytest.raises(ValueError, match=r"^sync_delay_ms must be between 1 and 10000, got 0$"):
        Store.open(tmp_path, sync="delay", sync_delay_ms=0)


def test_corruption_in_the_middle_refuses_to_open(tmp_path: Path, gen: IdGenerator) -> None:
    with Store.open(tmp_path) as s:
        for _ in range(3):
            s.create(record(gen.new()), now_ms=T0)
    seg = tmp_path / "wal-0000000000000001.log"
    data = bytearray(seg.read_bytes())
    data[20] ^= 0x40  # inside the first record
    seg.write_bytes(bytes(data))
    with pytest.raises(
        StoreFailed, match=rf"^{seg} is corrupted at offset 8: batch fails its length or CRC32C"
    ):
        Store.open(tmp_path)


def test_always_writes_into_pre_zeroed_space_and_delay_grows_the_file(
    tmp_path: Path, gen: IdGenerator
) -> None:
    seg = tmp_path / "wal-0000000000000001.log"
    ids = [gen.new() for _ in range(40)]
    with Store.open(tmp_path) as s:
        assert seg.stat().st_size == 8 + (4 << 20)  # header, then one chunk of zeros
        assert s.stats()["journal_bytes"] == 8
        for rx in ids[:20]:
            s.create(record(rx), now_ms=T0)
        assert seg.stat().st_size == 8 + (4 << 20)  # the commits changed no file size
        logical = s.stats()["journal_bytes"]
        assert 20 * 100 < logical < 20 * 2000
    assert seg.read_bytes()[:8] == b"ORDJRNL3"
    with Store.open(tmp_path, sync="delay", sync_delay_ms=1) as s:
        assert seg.stat().st_size == logical == s.stats()["journal_bytes"]  # zeros cut
        for rx in ids[20:]:
            s.create(record(rx), now_ms=T0)
            assert seg.stat().st_size == s.stats()["journal_bytes"]
        assert seg.stat().st_size > logical
    with Store.open(tmp_path) as s:
        assert len(s) == 40
        assert s.stats()["truncated_bytes"] == 0


def test_a_torn_last_batch_is_dropped_and_its_bytes_zeroed(
    tmp_path: Path, gen: IdGenerator
) -> None:
    ids = [gen.new() for _ in range(3)]
    with Store.open(tmp_path) as s:
        for rx in ids:
            s.create(record(rx), now_ms=T0)
        end = s.stats()["journal_bytes"]
    seg = tmp_path / "wal-0000000000000001.log"
    data = bytearray(seg.read_bytes())
    data[end : end + 100] = b"\x07" * 100  # a batch cut short: no valid frame
    data[end + 5000 : end + 5010] = b"\x09" * 10  # a stray page further on
    seg.write_bytes(bytes(data))
    with Store.open(tmp_path) as s:
        assert len(s) == 3
        stats = s.stats()
        assert stats["truncated_bytes"] == 5010
        assert stats["journal_bytes"] == end
        assert seg.read_bytes()[end:] == bytes(len(data) - end)
        s.create(record(gen.new()), now_ms=T0)
    with Store.open(tmp_path) as s:
        assert len(s) == 4
        assert s.stats()["truncated_bytes"] == 0


def test_threads_dispensing_the_same_prescriptions(tmp_path: Path, gen: IdGenerator) -> None:
    s = Store.open(tmp_path)
    ids = [gen.new() for _ in range(4)]
    for rx in ids:
        s.create(record(rx, lines=[(25, 0)]), now_ms=T0)
    applied: list[str] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(40):
            rx = ids[i % 4]
            key = f"w{t // 2}-{i}"  # two threads share each key
            try:
                a = json.loads(
                    s.dispense(
                        rx, dispensation((0, 1)), idempotency_key=key, access_code=CODE, now_ms=T0
                    )
                )
            except Conflict:
                continue
            if not a["replayed"]:
                with lock:
                    applied.append(f"{rx}:{key}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(applied) == len(set(applied)) == 100  # 4 x 25 units, each key applied once
    for rx in ids:
        doc = json.loads(s.get(rx))
        assert doc["lines"][0]["remaining"] == 0
        assert len(doc["dispensations"]) == 25
    stats = s.stats()
    assert stats["batches"] < stats["records"]  # group commit shared fsyncs
    s.close()


def test_public_name() -> None:
    assert ordonum.Store is Store
