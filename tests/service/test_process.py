"""A real ``ordonum serve`` process (uvicorn, uvloop, httptools) on a free port.

- Restart between writes and reads: nothing lost.
- SIGKILL during concurrent dispensations: every acknowledged (201) dispensation is there
  after restart, and the remaining quantities add up with exactly the dispensations kept.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ordonum import qr

from .conftest import finess, nir, prescription_body, rpps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """``ordonum serve`` in a subprocess; ``store`` and ``workers`` as on the command line."""

    def __init__(self, data: Path, store: str = "", workers: int = 1) -> None:
        self.data = data
        self.store = store
        self.workers = workers
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / "server.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "ORDONUM_LOG_LEVEL": "warning",
            "ORDONUM_RATE": "100000",
            "ORDONUM_BURST": "100000",
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ordonum",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data",
                    str(self.data),
                    *(["--store", self.store] if self.store else []),
                    *(["--workers", str(self.workers)] if self.workers != 1 else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("server did not start:\n" + self.log.read_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.proc = None

    def token(self, role: str, ident: str, rpps: str | None = None) -> dict[str, str]:
        cmd = [
            sys.executable,
            "-m",
            "ordonum",
            "token",
            "--role",
            role,
            "--id",
            ident,
            "--data",
            str(self.data),
        ]
        if rpps:
            cmd += ["--rpps", rpps]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        assert out.count("\n") == 1  # the token alone on stdout
        return {"Authorization": f"Bearer {out.strip()}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    srv.start()
    yield srv
    if srv.proc is not None:
        srv.stop(signal.SIGKILL)


def test_restart_between_writes_and_reads(server: Server) -> None:
    prescriber, patient = rpps(), nir()
    pharmacy = server.token("pharmacist", finess(), rpps=rpps())
    doctor = server.token("prescriber", prescriber)
    me = server.token("patient", patient)
    created = []
    with httpx.Client(base_url=server.url) as c:
        for _ in range(5):
            reply = c.post("/v1/prescriptions", json=prescription_body(patient), headers=doctor)
            assert reply.status_code == 201
            created.append(reply.json())
        done = c.post(
            f"/v1/prescriptions/{created[0]['id']}/dispensations",
            json={"token": created[0]["token"], "lines": [{"line": 0, "quantity": 5}]},
            headers={**pharmacy, "Idempotency-Key": "once"},
        ).json()
        assert c.post(f"/v1/prescriptions/{created[1]['id']}/cancel", headers=doctor).is_success
    keys_before = sorted(p.name for p in (server.data / "keys").iterdir())
    server.stop()
    server.start()
    assert sorted(p.name for p in (server.data / "keys").iterdir()) == keys_before
    with httpx.Client(base_url=server.url) as c:
        mine = c.get("/v1/me/prescriptions", headers=me).json()["prescriptions"]
        assert [p["id"] for p in mine] == [p["id"] for p in reversed(created)]
        first = c.post("/v1/scan", json={"token": created[0]["token"]}, headers=pharmacy).json()
        assert first["dispensations"][0]["dispensation_id"] == done["dispensation_id"]
        assert first["lines"][0]["remaining"] == 7
        second = c.post("/v1/scan", json={"token": created[1]["token"]}, headers=pharmacy)
        assert second.json()["status"] == "cancelled"
        again = c.post(  # the idempotency key survived the restart too
            f"/v1/prescriptions/{created[0]['id']}/dispensations",
            json={"token": created[0]["token"], "lines": [{"line": 0, "quantity": 5}]},
            headers={**pharmacy, "Idempotency-Key": "once"},
        ).json()
        assert again["dispensation_id"] == done["dispensation_id"]


def test_sigkill_during_concurrent_dispensations(server: Server) -> None:
    prescriber, patient = rpps(), nir()
    pharmacy = server.token("pharmacist", finess(), rpps=rpps())
    doctor = server.token("prescriber", prescriber)
    me = server.token("patient", patient)
    body = prescription_body(patient, lines=[{"label": "x", "dosage": "y", "quantity": 9_999}])
    with httpx.Client(base_url=server.url) as c:
        created = [c.post("/v1/prescriptions", json=body, headers=doctor).json() for _ in range(8)]
    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(n: int) -> None:
        rx = created[n % len(created)]
        with httpx.Client(base_url=server.url, timeout=10) as c:
            while not stop.is_set():
                try:
                    reply = c.post(
                        f"/v1/prescriptions/{rx['id']}/dispensations",
                        json={"token": rx["token"], "lines": [{"line": 0, "quantity": 1}]},
                        headers={**pharmacy, "Idempotency-Key": str(uuid.uuid4())},
                    )
                except httpx.HTTPError:
                    return
                if reply.status_code == 201:
                    with lock:
                        acknowledged.append((rx["id"], reply.json()["dispensation_id"]))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acknowledged) > 50, "too few writes before the kill to test anything"
    server.start()
    kept: dict[str, set[str]] = {}
    with httpx.Client(base_url=server.url) as c:
        for rx in created:
            reply = c.get(f"/v1/prescriptions/{rx['id']}/dispensations", headers=me)
            dispensations: list[dict[str, Any]] = reply.json()["dispensations"]
            kept[rx["id"]] = {d["dispensation_id"] for d in dispensations}
            doc = c.post("/v1/scan", json={"token": rx["token"]}, headers=pharmacy).json()
            assert doc["lines"][0]["remaining"] == 9_999 - len(dispensations)
            # the QR token text was acknowledged with the creation: the same QR after a kill
            svg = c.get(f"/v1/prescriptions/{rx['id']}/qr.svg", headers=me)
            assert svg.status_code == 200
            assert svg.content == qr.svg(rx["token"]).encode()
    lost = [(rx, d) for rx, d in acknowledged if d not in kept[rx]]
    assert lost == []
