"""HTTP throughput with wrk: bare FastAPI baselines vs the ordonum service (``make bench-http``).

One uvicorn worker (uvloop + httptools) for every server; wrk with 64 connections, 2 threads,
10 s per run. On a machine with at least two cores the server is pinned to CPU 0 and wrk to
CPU 1 (``taskset``) so they do not fight over one core. Runs:

- ``fastapi orjson``: ``GET /items/{key}`` → dict lookup, ``ORJSONResponse``;
- ``fastapi pydantic``: the same lookup returned through a pydantic response model;
- ``ordonum scan token``: ``POST /v1/scan`` with QR tokens of 5,000 prescriptions in turn
  (bearer JWT verified once then cached; each token's Ed25519 signature checked the first
  time its text is seen, then remembered by ``ordonum.TokenCache`` as on a real counter, where the
  dispensations resend the scanned token);
- ``ordonum scan manual``: ``POST /v1/scan`` with ID + access code;
- ``ordonum dispense``: ``POST /v1/prescriptions/{id}/dispensations`` over 500
  prescriptions, a distinct ``Idempotency-Key`` each, acknowledged after fdatasync;
- ``ordonum create``: ``POST /v1/prescriptions``, 2,000 bodies of 1 to 4 real medicines in
  turn (a new ID, a QR token and an acknowledgement each: two Ed25519 signatures),
  acknowledged after fdatasync.

Writes ``bench/results/http.md``. Needs ``wrk`` (Debian: ``apt-get install wrk``). Not a
pytest benchmark (pytest collects this file and finds no test in it).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loadkit

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DURATION = int(os.environ.get("BENCH_HTTP_SECONDS", "10"))
CONNECTIONS = 64

BASELINE_APP = """
import warnings
warnings.simplefilter("ignore")
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel

ITEMS = {str(i): {"id": str(i), "name": f"item {i}", "price": i * 1.5} for i in range(10_000)}

class Item(BaseModel):
    id: str
    name: str
    price: float

orjson_app = FastAPI()
pydantic_app = FastAPI()

@orjson_app.get("/items/{key}", response_class=ORJSONResponse)
async def get_orjson(key: str):
    return ORJSONResponse(ITEMS[key])

@pydantic_app.get("/items/{key}")
async def get_pydantic(key: str) -> Item:
    return ITEMS[key]
"""

LUA_LIST = r"""
-- Cycles through request bodies prepared one per line in a file. Every request gets a fresh
-- Idempotency-Key, distinct across wrk threads too: each thread has its own Lua state, seeded
-- alike, so keys from math.random() alone repeat across threads (identical requests then race
-- and come back as replays, not new dispensations). setup() numbers the threads.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local bodies, paths = {}, {}
local n, counter = 0, 0
local bearer = os.getenv("BENCH_BEARER")
init = function(args)
  for line in io.lines(args[1]) do
    local path, body = line:match("^(%S+)\t(.*)$")
    paths[#paths + 1] = path
    bodies[#bodies + 1] = body
  end
  n = (tid * 7919) % #bodies
end
request = function()
  n = n % #bodies + 1
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. bearer,
    ["Idempotency-Key"] = "bench-" .. tid .. "-" .. counter,
  }
  return wrk.format("POST", paths[n], headers, bodies[n])
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pin(cpu: int) -> list[str]:
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu)]
    return []


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wrk(
    url: str,
    script: Path | None = None,
    data: Path | None = None,
    env: dict[str, str] | None = None,
    server: subprocess.Popen[bytes] | None = None,
) -> dict[str, float]:
    """One wrk run; with ``server``, also that process's CPU time per request (µs): unlike
    req/s, it barely moves when something else shares the machine."""
    before = loadkit.cpu_seconds(server.pid) if server is not None else math.nan
    cmd = [*pin(1), "wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if data:
        cmd += ["--", str(data)]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    ).stdout
    after = loadkit.cpu_seconds(server.pid) if server is not None else math.nan
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    requests = float(total.group(1)) if total else 0.0
    return {
        "cpu_us": (after - before) * 1e6 / requests if requests else math.nan,
        "rps": rps,
        "p50": ms("50%"),
        "p99": ms("99%"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
        "requests": requests,
    }


def serve_baseline(tmp: Path, app: str) -> tuple[subprocess.Popen[bytes], str]:
    (tmp / "baseline_apps.py").write_text(BASELINE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            *pin(0),
            PY,
            "-m",
            "uvicorn",
            f"baseline_apps:{app}",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/items/1", proc)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    import httpx

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ordonum-bench-http-") as name:
        tmp = Path(name)
        for label, app in (("fastapi orjson", "orjson_app"), ("fastapi pydantic", "pydantic_app")):
            proc, url = serve_baseline(tmp, app)
            try:
                wrk(url + "/items/42")  # warm-up
                results[label] = wrk(url + "/items/42", server=proc)
            finally:
                stop(proc)
            print(label, results[label], file=sys.stderr)

        data = tmp / "data"
        ordonum = [PY, "-m", "ordonum"]
        subprocess.run(
            [
                *ordonum,
                "demo",
                "--count",
                "5000",
                "--seed",
                "1",
                "--data",
                str(data),
                "--tokens",
                str(tmp / "tokens.tsv"),
            ],
            check=True,
        )

        def token(*args: str) -> str:
            return subprocess.run(
                [*ordonum, "token", *args, "--data", str(data)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()

        pharmacist = token("--role", "pharmacist", "--id", "750000010", "--rpps", "10000000009")
        prescriber = token("--role", "prescriber", "--id", "10000000009")
        port = free_port()
        env = {
            **os.environ,
            "ORDONUM_RATE": "1000000",
            "ORDONUM_BURST": "1000000",
            "ORDONUM_LOG_LEVEL": "warning",
        }
        proc = subprocess.Popen(
            [*pin(0), *ordonum, "serve", "--port", str(port), "--data", str(data)], env=env
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(url + "/healthz", proc)
            rows = [line.split("\t") for line in (tmp / "tokens.tsv").read_text().splitlines()[1:]]
            scan_token = tmp / "scan_token.txt"
            scan_token.write_text(
                "".join(f"/v1/scan\t{json.dumps({'token': r[1]})}\n" for r in rows)
            )
            scan_manual = tmp / "scan_manual.txt"
            scan_manual.write_text(
                "".join(
                    f"/v1/scan\t{json.dumps({'id': r[0], 'access_code': r[2]})}\n" for r in rows
                )
            )
            body = {
                "patient": {
                    "nir": "180057512345627",
                    "name": "Bench Patient",
                    "birth_date": "1980-05-17",
                },
                "lines": [{"label": "bench", "dosage": "bench", "quantity": 9_999}],
            }
            dispense = tmp / "dispense.txt"
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {prescriber}"}) as c:
                lines = []
                for _ in range(500):
                    out = c.post("/v1/prescriptions", json=body).json()
                    payload = {"token": out["token"], "lines": [{"line": 0, "quantity": 1}]}
                    lines.append(
                        f"/v1/prescriptions/{out['id']}/dispensations\t{json.dumps(payload)}\n"
                    )
            dispense.write_text("".join(lines))
            rng, meds = random.Random(1), loadkit.load_medicines()
            create = tmp / "create.txt"
            bodies = (loadkit.prescription_body(rng, body["patient"], meds) for _ in range(2000))
            create.write_text("".join(f"/v1/prescriptions\t{json.dumps(b)}\n" for b in bodies))
            script = tmp / "list.lua"
            script.write_text(LUA_LIST)
            bearer = {"BENCH_BEARER": pharmacist}
            wrk(url, script, scan_manual, bearer)  # warm-up
            for label, file in (
                ("ordonum scan token", scan_token),
                ("ordonum scan manual", scan_manual),
                ("ordonum dispense (durable)", dispense),
            ):
                results[label] = wrk(url, script, file, bearer, server=proc)
                print(label, results[label], file=sys.stderr)
            label = "ordonum create (durable)"
            results[label] = wrk(url, script, create, {"BENCH_BEARER": prescriber}, server=proc)
            print(label, results[label], file=sys.stderr)
        finally:
            stop(proc)

    best = max(results["fastapi orjson"]["rps"], results["fastapi pydantic"]["rps"])
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pinned = " pinned to CPU 0, wrk to CPU 1" if pin(0) else ""
    table = [
        f"Measured {datetime.date.today().isoformat()} on {cpu}, {os.cpu_count()} cores; "
        f"one uvicorn worker (uvloop, httptools){pinned}; "
        f"wrk -t2 -c{CONNECTIONS} -d{DURATION}s.",
        "",
        "| run | req/s | vs best bare FastAPI | server CPU µs/req | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        table.append(
            f"| {label} | {r['rps']:,.0f} | {r['rps'] / best:.0%} | {r['cpu_us']:.0f} | "
            f"{r['p50']:.2f} | "
            f"{r['p99']:.2f} | {r['errors']:.0f} |"
        )
    text = "\n".join(table) + "\n"
    out = ROOT / "bench" / "results" / "http.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
