"""Failover drill: lose the PostgreSQL primary under dispensation load, lose nothing acknowledged.

    .venv/bin/python bench/failover_drill.py [--clients 16] [--before 4] [--after 4] [--workers 2]

1. A primary with ``synchronous_standby_names = 'FIRST 1 (standby1)'`` and
   ``synchronous_commit = on``, and a standby made with ``pg_basebackup -R`` streaming from it
   as ``standby1`` (both throwaway clusters from ``bench/pgcluster.py``, on this machine).
2. ``ordonum serve --workers N --store postgresql://...@primary,standby/ordonum?
   target_session_attrs=read-write``: the pool connects to whichever host accepts writes.
3. Prescriptions are created, then ``--clients`` threads dispense one unit at a time, each
   request with a fresh idempotency key, and record every acknowledged (HTTP 201)
   ``dispensation_id``.
4. After ``--before`` seconds the primary's postmaster and backends get SIGKILL (the machine
   is gone, as far as the database is concerned). For the last ``--stall`` seconds before
   that, the standby's WAL receiver is stopped (SIGSTOP), and killed with the primary (the
   WAL in flight in its socket is lost with the machine): a lagging standby, so that the
   kill finds commits the standby has not received (with synchronous replication they wait
   and are never acknowledged; with ``--async-standby``, the negative control, they are
   acknowledged and then lost, and the drill must say so). The standby is promoted
   (``pg_ctl promote``); the load goes on for ``--after`` seconds against the new primary.
5. The new primary is read directly: every acknowledged dispensation must be there, and each
   prescription's remaining quantity must equal its allowance minus what is recorded.

Prints a report and exits 1 on any lost acknowledged dispensation (or inconsistency).
Requests that failed during the failover (503, connection reset) were not acknowledged:
they may or may not have committed, and the report counts those that did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgcluster import PgCluster, free_port

ROOT = Path(__file__).resolve().parents[1]
PRESCRIBER, PATIENT = "10000000009", "180057512345627"
PHARMACY, PHARMACIST = "750000010", "10000000017"
QUANTITY = 9_999


def say(text: str) -> None:
    print(f"[drill] {text}", file=sys.stderr, flush=True)


def token(data: Path, role: str, ident: str, rpps: str | None = None) -> dict[str, str]:
    cmd = [sys.executable, "-m", "ordonum", "token", "--role", role, "--id", ident]
    cmd += ["--data", str(data), *(["--rpps", rpps] if rpps else [])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return {"Authorization": f"Bearer {out}"}


def wait_sync_standby(primary: PgCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = primary.psql(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'"
        )
        if state == "sync":
            return
        time.sleep(0.2)
    raise SystemExit("the standby did not become synchronous")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--prescriptions", type=int, default=32)
    ap.add_argument("--before", type=float, default=4.0, help="seconds of load before the kill")
    ap.add_argument(
        "--async-standby",
        action="store_true",
        help="negative control: no synchronous_standby_names (acknowledged writes may be lost,"
        " and the drill should say so)",
    )
    ap.add_argument(
        "--stall",
        type=float,
        default=1.0,
        help="seconds before the kill during which the standby's WAL receiver is stopped"
        " (SIGSTOP): a lagging standby, the case synchronous replication exists for (0: none)",
    )
    ap.add_argument("--after", type=float, default=4.0, help="seconds of load after promotion")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="ordonum-drill-"))
    os.chmod(base, 0o755)
    # A timeout's SIGTERM must still stop the clusters (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    primary = PgCluster.create(base / "primary")
    primary.start()
    say(f"primary on port {primary.port}")
    standby: PgCluster | None = None
    server: subprocess.Popen[bytes] | None = None
    try:
        primary.psql("CREATE DATABASE ordonum")
        standby = PgCluster.standby_of(primary, base / "standby", name="standby1")
        standby.start()
        # Synchronous from now on (set once the standby exists: before, every commit would
        # wait for it, the base backup's CREATE DATABASE included).
        if not args.async_standby:
            primary.set(synchronous_standby_names="FIRST 1 (standby1)", synchronous_commit="on")
            primary.reload()
            say(f"standby on port {standby.port}, waiting for it to be synchronous")
            wait_sync_standby(primary)
        url = (
            f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/ordonum"
            "?target_session_attrs=read-write"
        )
        data, port = base / "service", free_port()
        log = (base / "service.log").open("wb")
        env = {**os.environ, "ORDONUM_LOG_LEVEL": "warning", "ORDONUM_RATE": "100000"}
        env["ORDONUM_BURST"] = "100000"
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "ordonum", "serve", "--port", str(port)),
                *("--data", str(data), "--store", url, "--workers", str(args.workers)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("service did not start: see " + str(base / "service.log"))
            time.sleep(0.1)
        say(f"service up ({args.workers} workers) on {base_url}")
        report = drill(args, base_url, data, primary, standby)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if standby is not None:
            standby.destroy()
        primary.destroy()
        if not os.environ.get("KEEP"):
            subprocess.run(["rm", "-rf", str(base)], check=False)
    for key, value in report.items():
        print(f"{key:>42}: {value}")
    ok = report["lost acknowledged dispensations"] == 0 and report["consistent"]
    return 0 if ok and report["dispensation IDs acknowledged twice"] == 0 else 1


def drill(
    args: argparse.Namespace, url: str, data: Path, primary: PgCluster, standby: PgCluster
) -> dict[str, Any]:
    doctor = token(data, "prescriber", PRESCRIBER)
    pharmacy = token(data, "pharmacist", PHARMACY, rpps=PHARMACIST)
    body = {
        "patient": {"nir": PATIENT, "name": "Camille Martin", "birth_date": "1980-05-17"},
        "lines": [{"label": "drill", "dosage": "-", "quantity": QUANTITY}],
    }
    with httpx.Client(base_url=url, timeout=30) as c:
        created = []
        for _ in range(args.prescriptions):
            reply = c.post("/v1/prescriptions", json=body, headers=doctor)
            reply.raise_for_status()
            created.append(reply.json())

    acknowledged: list[tuple[float, str, str]] = []  # (when, dispensation_id, key)
    failures: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                rx = created[(n + i) % len(created)]
                i += 1
                key = str(uuid.uuid4())
                try:
                    reply = c.post(
                        f"/v1/prescriptions/{rx['id']}/dispensations",
                        json={"token": rx["token"], "lines": [{"line": 0, "quantity": 1}]},
                        headers={**pharmacy, "Idempotency-Key": key},
                    )
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append((time.monotonic(), type(exc).__name__))
                    time.sleep(0.05)
                    continue
                with lock:
                    if reply.status_code == 201:
                        answer = reply.json()["dispensation_id"]
                        acknowledged.append((time.monotonic(), answer, f"{PHARMACY}:{key}"))
                    else:
                        failures.append((time.monotonic(), str(reply.status_code)))
                if reply.status_code != 201:
                    time.sleep(0.05)

    say(f"{len(created)} prescriptions created; load for {args.before} s")
    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(max(0.0, args.before - args.stall))
    receiver = walreceiver(standby) if args.stall > 0 else None
    if receiver is not None:
        os.kill(receiver, signal.SIGSTOP)
        say(f"standby's WAL receiver stopped for {args.stall} s")
        time.sleep(args.stall)
    killed_at = time.monotonic()
    primary.kill()
    if receiver is not None:
        # The WAL still in flight (in the receiver's socket) goes with the lost machine.
        os.kill(receiver, signal.SIGKILL)
    say("primary killed (SIGKILL); promoting the standby")
    standby.promote()
    promoted_at = time.monotonic()
    say(f"standby promoted; load for {args.after} s more")
    time.sleep(args.after)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    end = time.monotonic()

    found, consistent = asyncio.run(read_back(standby, [rx["id"] for rx in created]))
    # A dispensation is kept if its ID is there AND recorded under its own idempotency key:
    # after a failover that lost writes, new dispensations would take the lost ones' numbers
    # (ID/n), so comparing IDs alone would hide the loss.
    acked = {(d, k) for _, d, k in acknowledged}
    lost = sorted(d for d, k in acked if found.get(d) != k)
    reused = len(acknowledged) - len({d for _, d, _ in acknowledged})
    after_kill = [t for t, _, _ in acknowledged if t > killed_at]
    after_promotion = [t for t in after_kill if t > promoted_at]
    return {
        "load": f"{args.clients} clients, {args.workers} service workers, {len(created)} Rx",
        "replication": "asynchronous (control)" if args.async_standby else "synchronous",
        "standby stalled before the kill (s)": args.stall,
        "acknowledged dispensations": len(acked),
        "  before the kill": sum(1 for t, _, _ in acknowledged if t <= killed_at),
        "  after the kill": len(after_kill),
        "acknowledged rate before the kill (/s)": round(
            sum(1 for t, _, _ in acknowledged if t <= killed_at) / (killed_at - t0)
        ),
        "found on the promoted standby": len(acked) - len(lost),
        "lost acknowledged dispensations": len(lost),
        "dispensation IDs acknowledged twice": reused,
        "committed but not acknowledged": len(set(found.items()) - acked),
        "failed requests (503 / connection)": len(failures),
        "promotion took (s)": round(promoted_at - killed_at, 2),
        "writes acknowledged again, after the kill (s)": (
            round(min(after_promotion) - killed_at, 2) if after_promotion else "none"
        ),
        "load duration (s)": round(end - t0, 1),
        "consistent": consistent,
        **({"lost (first 5)": lost[:5]} if lost else {}),
    }


def walreceiver(standby: PgCluster) -> int:
    out = subprocess.run(
        ["pgrep", "-P", str(standby.postmaster_pid()), "-f", "walreceiver"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if len(out) != 1:
        raise SystemExit(f"expected one walreceiver process on the standby, found {out}")
    return int(out[0])


async def read_back(cluster: PgCluster, ids: list[str]) -> tuple[dict[str, str], bool]:
    """Every dispensation ID on ``cluster`` with its idempotency key, and whether each
    prescription's remaining quantity equals the allowance minus the recorded quantities."""
    conn = await asyncpg.connect(cluster.url("ordonum"))
    try:
        rows = await conn.fetch(
            "SELECT rx_id, n, idempotency_key FROM dispensations WHERE rx_id = ANY($1)", ids
        )
        check = await conn.fetch(
            "SELECT p.id, p.remaining[1] AS remaining, p.dispensation_count,"
            " (SELECT coalesce(sum((d.lines->0->>'quantity')::int), 0) FROM dispensations d"
            "  WHERE d.rx_id = p.id) AS dispensed,"
            " (SELECT count(*) FROM dispensations d WHERE d.rx_id = p.id) AS rows"
            " FROM prescriptions p WHERE p.id = ANY($1)",
            ids,
        )
    finally:
        await conn.close()
    consistent = len(check) == len(ids) and all(
        r["remaining"] == QUANTITY - r["dispensed"] and r["dispensation_count"] == r["rows"]
        for r in check
    )
    return {f"{r['rx_id']}/{r['n']}": r["idempotency_key"] for r in rows}, consistent


if __name__ == "__main__":
    sys.exit(main())
