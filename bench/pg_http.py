"""The two backends side by side, same machine, same run: wrk against ``ordonum serve``.

    .venv/bin/python bench/pg_http.py [--seconds 10] [--pg-workers 2]

Servers: the embedded store with 1 worker (it is single-process) and PostgreSQL (a
throwaway cluster from ``bench/pgcluster.py``, default durability: ``fsync`` and
``synchronous_commit`` on, no standby) with ``--pg-workers`` workers. For each, 1,000
prescriptions are created through the API, then wrk (64 connections, 2 threads, the Lua
request lists of ``bench/bench_http.py``) runs: ``POST /v1/scan`` with QR tokens, and
``POST .../dispensations`` of one unit with a fresh idempotency key each (acknowledged once
durable). Nothing is pinned: the service processes, PostgreSQL and wrk share the cores, as
they would on one small machine. The mixed national-peak load is ``bench/load.py``'s job.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http
from bench_http import LUA_LIST, free_port, stop, wait_up
from pgcluster import PgCluster

PY = sys.executable


def token(data: Path, *args: str) -> str:
    return subprocess.run(
        [PY, "-m", "ordonum", "token", *args, "--data", str(data)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def run_one(label: str, tmp: Path, store: str, workers: int) -> dict[str, dict[str, float]]:
    data = tmp / label / "data"
    port = free_port()
    env = {
        **os.environ,
        "ORDONUM_RATE": "1000000",
        "ORDONUM_BURST": "1000000",
        "ORDONUM_LOG_LEVEL": "warning",
    }
    cmd = [PY, "-m", "ordonum", "serve", "--port", str(port), "--data", str(data)]
    if store:
        cmd += ["--store", store, "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, float]] = {}
    try:
        wait_up(url + "/healthz", proc)
        prescriber = token(data, "--role", "prescriber", "--id", "10000000009")
        pharmacist = token(
            data, "--role", "pharmacist", "--id", "750000010", "--rpps", "10000000017"
        )
        body = {
            "patient": {"nir": "180057512345627", "name": "Bench", "birth_date": "1980-05-17"},
            "lines": [{"label": "bench", "dosage": "bench", "quantity": 9_999}],
        }

        def create(_: int) -> dict[str, Any]:
            with httpx.Client(base_url=url, timeout=30) as c:
                reply = c.post(
                    "/v1/prescriptions",
                    json=body,
                    headers={"Authorization": f"Bearer {prescriber}"},
                )
                reply.raise_for_status()
                out: dict[str, Any] = reply.json()
                return out

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            created = list(pool.map(create, range(1000)))
        scan = tmp / label / "scan.txt"
        scan.write_text(
            "".join(f"/v1/scan\t{json.dumps({'token': rx['token']})}\n" for rx in created)
        )
        dispense = tmp / label / "dispense.txt"
        dispense.write_text(
            "".join(
                f"/v1/prescriptions/{rx['id']}/dispensations\t"
                f"{json.dumps({'token': rx['token'], 'lines': [{'line': 0, 'quantity': 1}]})}\n"
                for rx in created
            )
        )
        script = tmp / "list.lua"
        script.write_text(LUA_LIST)
        bearer = {"BENCH_BEARER": pharmacist}
        bench_http.wrk(url, script, scan, bearer)  # warm-up
        for what, file in (("scan (QR token)", scan), ("dispense (durable)", dispense)):
            results[what] = bench_http.wrk(url, script, file, bearer)
            print(label, what, results[what], file=sys.stderr)
    finally:
        stop(proc)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--pg-workers", type=int, default=2)
    args = ap.parse_args()
    bench_http.DURATION = args.seconds
    bench_http.pin = lambda cpu: []  # nothing pinned (see the module doc)
    cluster = PgCluster.create()
    cluster.start()
    try:
        url = cluster.create_database("bench")
        with tempfile.TemporaryDirectory(prefix="ordonum-pg-http-") as name:
            tmp = Path(name)
            rows = {
                "embedded, 1 worker": run_one("embedded", tmp, "", 1),
                f"PostgreSQL, {args.pg_workers} workers": run_one(
                    "postgresql", tmp, url, args.pg_workers
                ),
            }
    finally:
        cluster.destroy()
    print(
        f"\n{os.cpu_count()} cores, nothing pinned; wrk -t2 -c{bench_http.CONNECTIONS}"
        f" -d{args.seconds}s\n"
    )
    print("| backend | request | req/s | p50 ms | p99 ms | non-2xx |")
    print("|---|---|---:|---:|---:|---:|")
    for backend, results in rows.items():
        for what, r in results.items():
            print(
                f"| {backend} | {what} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} |"
                f" {r['errors']:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
