"""Several ``ordonum serve`` processes on one PostgreSQL: ``--store postgresql://... --workers 3``.

Many clients race to dispense the last units of the same prescriptions through three
uvicorn worker processes (each with its own pool and its own leased ID node). Afterwards:
no prescription was dispensed beyond its allowance, every acknowledged dispensation is in
the database with the quantity acknowledged, nothing unacknowledged is there, and a request
resent with its idempotency key (to whichever worker) got the first answer back.
"""

from __future__ import annotations

import random
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ordonum import parse_id

from .conftest import finess, nir, prescription_body, rpps
from .test_process import Server

ALLOWANCE = 6  # units per prescription: quantity 3, one renewal
CLIENTS = 24


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Server]:
    srv = Server(tmp_path / "data", store=pg_url, workers=3)
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop(signal.SIGTERM)


def test_racing_clients_through_three_workers(workers: Server) -> None:
    doctor_rpps, patient = rpps(), nir()
    doctor = workers.token("prescriber", doctor_rpps)
    me = workers.token("patient", patient)
    pharmacies = [workers.token("pharmacist", finess(), rpps=rpps()) for _ in range(4)]
    body = prescription_body(
        patient,
        lines=[{"label": "x", "dosage": "y", "quantity": 3, "renewals": 1}],
    )
    created: list[dict[str, Any]] = []

    def create() -> None:  # a connection each, concurrently: the workers share them out
        reply = httpx.post(f"{workers.url}/v1/prescriptions", json=body, headers=doctor)
        assert reply.status_code == 201, reply.text
        with lock:
            created.append(reply.json())

    lock = threading.Lock()
    makers = [threading.Thread(target=create) for _ in range(12)]
    for t in makers:
        t.start()
    for t in makers:
        t.join(timeout=60)
    assert len(created) == 12
    # The creations were spread over the processes: IDs of several leased nodes.
    assert len({parse_id(rx["id"]).node for rx in created}) >= 2

    acknowledged: list[tuple[str, str, int]] = []  # (rx, dispensation_id, quantity)
    replays: list[tuple[str, str]] = []
    unexpected: list[str] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        pharmacy = pharmacies[n % len(pharmacies)]
        with httpx.Client(base_url=workers.url, timeout=30) as c:
            for _ in range(10):
                rx = rng.choice(created)
                quantity = rng.choice([1, 1, 2])
                request = {
                    "json": {"token": rx["token"], "lines": [{"line": 0, "quantity": quantity}]},
                    "headers": {**pharmacy, "Idempotency-Key": str(uuid.uuid4())},
                }
                reply = c.post(f"/v1/prescriptions/{rx['id']}/dispensations", **request)
                if reply.status_code == 201:
                    answer = reply.json()
                    with lock:
                        acknowledged.append((rx["id"], answer["dispensation_id"], quantity))
                    if rng.random() < 0.3:  # the answer was "lost": send it again
                        again = c.post(f"/v1/prescriptions/{rx['id']}/dispensations", **request)
                        with lock:
                            replays.append((answer["dispensation_id"], again.text))
                elif reply.status_code != 409:
                    with lock:
                        unexpected.append(f"{reply.status_code} {reply.text}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert unexpected == []
    assert len(acknowledged) >= len(created)  # most prescriptions were fought over
    for first_id, text in replays:
        assert f'"dispensation_id":"{first_id}"' in text, text
        assert '"replayed":true' in text, text

    with httpx.Client(base_url=workers.url, timeout=30) as c:
        for rx in created:
            mine = [(d, q) for r, d, q in acknowledged if r == rx["id"]]
            assert sum(q for _, q in mine) <= ALLOWANCE
            reply = c.get(f"/v1/prescriptions/{rx['id']}/dispensations", headers=me)
            kept = {
                d["dispensation_id"]: d["lines"][0]["quantity"]
                for d in reply.json()["dispensations"]
            }
            assert kept == dict(mine)  # every acknowledged one, and nothing else
            doc = c.post("/v1/scan", json={"token": rx["token"]}, headers=pharmacies[0]).json()
            assert doc["lines"][0]["remaining"] == ALLOWANCE - sum(kept.values())


def test_workers_need_postgresql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ordonum.cli import main

    assert main(["serve", "--workers", "2", "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "ordonum serve: --workers 2 needs --store postgresql://...: the embedded store belongs"
        " to one process (it locks its directory)\n"
    )
    assert main(["serve", "--store", "mysql://u:secret@h/db", "--data", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "ordonum serve: ORDONUM_STORE must be a postgresql:// URL (or empty for the embedded"
        " store), got 'mysql://u:***@h/db'\n"
    )


def test_demo_loads_postgresql(tmp_path: Path, pg_cluster: Any) -> None:
    """``ordonum demo --store postgresql://...``: what the load test preloads, on PostgreSQL;
    the service then serves those prescriptions (scan by token and by typed code)."""
    from ordonum.cli import main

    url = pg_cluster.create_database(f"demo_{uuid.uuid4().hex[:8]}")
    tokens = tmp_path / "tokens.tsv"
    data = tmp_path / "data"
    args = ["demo", "--count", "300", "--seed", "3", "--data", str(data), "--store", url]
    assert main([*args, "--tokens", str(tokens)]) == 0
    rows = [line.split("\t") for line in tokens.read_text().splitlines()[1:]]
    assert len(rows) == 300
    srv = Server(data, store=url)
    srv.start()
    try:
        pharmacy = srv.token("pharmacist", finess(), rpps=rpps())
        with httpx.Client(base_url=srv.url) as c:
            for rx_id, token, code, prescriber, patient in rows[::50]:
                doc = c.post("/v1/scan", json={"token": token}, headers=pharmacy).json()
                assert (doc["id"], doc["prescriber"]["rpps"]) == (rx_id, prescriber)
                assert doc["patient"]["nir"] == patient
                typed = c.post(
                    "/v1/scan", json={"id": rx_id, "access_code": code}, headers=pharmacy
                )
                assert typed.json() == doc
            health = c.get("/healthz").json()
            assert health == {"status": "ok", "prescriptions": 300, "store": "postgresql"}
    finally:
        srv.stop()
