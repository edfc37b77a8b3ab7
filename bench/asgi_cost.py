"""CPU cost of each HTTP flow, in process: the ASGI app driven directly, no network, no server.

``python bench/asgi_cost.py [-n 2000] [--profile FLOW]`` builds the real app (``create_app``,
its lifespan, a fresh data dir with dev keys, the embedded store with durable writes), mints
bearer tokens for many identities (bench/loadkit.py), and sends each flow ``n`` times, one
request at a time. For each flow it prints the process CPU time per request (every thread:
the event loop, the worker pool, the journal writer) and the wall time per request.

What it is for: deciding where a request's CPU goes, on a machine too noisy for wall-clock
throughput. CPU time per request barely moves with the machine's load, unlike req/s. It leaves
out what uvicorn and httptools cost per request (parsing, the socket): `make bench-http`
(wrk) and `make load` (locust) measure those. ``--profile FLOW`` runs that flow under
cProfile and prints the top functions by cumulative time. One request at a time: every
durable write is a journal batch of its own and pays a whole ``fdatasync`` (kernel CPU
included), which group commit shares between concurrent writes under real load.

Not a pytest benchmark (no test in it).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import loadkit  # noqa: E402
from ordonum.service.app import create_app  # noqa: E402
from ordonum.service.keys import ensure_keys  # noqa: E402
from ordonum.service.settings import Settings  # noqa: E402

Send = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


def asgi_client(app: Any) -> Send:
    async def call(
        method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        raw = [(b"host", b"bench"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    return call


async def lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    msg = await outbox.get()
    if msg["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {msg}")
    return task, inbox


async def run(n: int, profile: str | None) -> None:
    data = Path(tempfile.mkdtemp(prefix="ordonum-asgi-"))
    ensure_keys(data / "keys")
    settings = Settings(data_dir=data, access_log=True, log_level="warning")
    app = create_app(settings)
    task, inbox = await lifespan(app)
    call = asgi_client(app)
    ids = loadkit.make_identities(data, 200, 200, 400)
    meds = loadkit.load_medicines()
    rng = random.Random(7)
    pool: list[dict[str, Any]] = []

    def bearer(who: dict[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {who['bearer']}", "content-type": "application/json"}

    async def create() -> tuple[int, bytes]:
        patient = rng.choice(ids.patients)
        body = loadkit.prescription_body(rng, patient, meds, 50)
        st, out = await call(
            "POST",
            "/v1/prescriptions",
            bearer(rng.choice(ids.prescribers)),
            json.dumps(body).encode(),
        )
        if st == 201:
            entry = loadkit.pool_entry(json.loads(out), body)
            entry["patient_bearer"] = patient["bearer"]
            pool.append(entry)
        return st, out

    def papers() -> Any:
        while True:
            yield from pool

    paper = papers()

    async def scan_token() -> tuple[int, bytes]:
        body = json.dumps({"token": next(paper)["token"]}).encode()
        return await call("POST", "/v1/scan", bearer(rng.choice(ids.pharmacists)), body)

    async def scan_manual() -> tuple[int, bytes]:
        e = next(paper)
        body = json.dumps({"id": e["id"], "access_code": e["access_code"]}).encode()
        return await call("POST", "/v1/scan", bearer(rng.choice(ids.pharmacists)), body)

    async def dispense() -> tuple[int, bytes]:
        e = next(paper)
        body = json.dumps({"token": e["token"], "lines": [{"line": 0, "quantity": 1}]}).encode()
        headers = bearer(rng.choice(ids.pharmacists)) | {"idempotency-key": f"k{rng.random()}"}
        return await call("POST", f"/v1/prescriptions/{e['id']}/dispensations", headers, body)

    async def my_prescriptions() -> tuple[int, bytes]:
        e = next(paper)
        return await call(
            "GET", "/v1/me/prescriptions", {"authorization": f"Bearer {e['patient_bearer']}"}, b""
        )

    async def access_log() -> tuple[int, bytes]:
        e = next(paper)
        headers = {"authorization": f"Bearer {e['patient_bearer']}"}
        return await call("GET", f"/v1/prescriptions/{e['id']}/access-log", headers, b"")

    async def healthz() -> tuple[int, bytes]:
        return await call("GET", "/healthz", {}, b"")

    flows: dict[str, Callable[[], Awaitable[tuple[int, bytes]]]] = {
        "healthz (baseline)": healthz,
        "create": create,
        "scan (QR token)": scan_token,
        "scan (typed ID + code)": scan_manual,
        "dispense": dispense,
        "patient: my prescriptions": my_prescriptions,
        "patient: access log": access_log,
    }
    for who in ids.prescribers + ids.pharmacists + ids.patients:  # warm the bearer cache
        await call("GET", "/v1/me/prescriptions", bearer(who), b"")
    print(f"{'flow':28} {'CPU µs/req':>11} {'of it, kernel':>14} {'wall µs/req':>12}  statuses")
    for name, flow in flows.items():
        prof = cProfile.Profile() if profile and profile in name else None
        statuses: dict[int, int] = {}
        t0, wall = os.times(), time.perf_counter()
        if prof:
            prof.enable()
        for _ in range(n):
            st, _body = await flow()
            statuses[st] = statuses.get(st, 0) + 1
        if prof:
            prof.disable()
        t1, wall = os.times(), time.perf_counter() - wall
        user, kernel = t1.user - t0.user, t1.system - t0.system
        print(
            f"{name:28} {(user + kernel) / n * 1e6:11.0f} {kernel / n * 1e6:14.0f} "
            f"{wall / n * 1e6:12.0f}  {statuses}"
        )
        if prof:
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())
    await inbox.put({"type": "lifespan.shutdown"})
    await task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="requests per flow")
    ap.add_argument("--profile", default=None, help="cProfile the flows whose name has this")
    args = ap.parse_args()
    import uvloop

    uvloop.run(run(args.n, args.profile))


if __name__ == "__main__":
    main()
