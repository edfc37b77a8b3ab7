"""National-peak load test: prescribers, pharmacists and patients at the sizing mix.

Run it with `make load` (bench/load.py prepares the store, the identities, the token pool and
the plan, then starts locust with ``ORDONUM_LOAD_PLAN`` pointing at the plan). By hand::

    ORDONUM_LOAD_PLAN=/tmp/x/plan.json locust -f bench/locustfile.py --headless --host URL

Every user sends **one request per tick** at a constant rate (``constant_throughput``), so a
persona's request rate is its user count times ``plan.user_rate`` and the shape below only
changes user counts. A user that falls behind (a response slower than its period) lowers the
achieved rate instead of hiding the delay: bench/load.py compares the achieved rate of each
step with its target and does not credit a step that missed it (coordinated omission).

Personas:
- PrescriberUser creates a prescription (1-4 lines of real medicines) for one of thousands of
  patients and hands its paper (ID, token, access code) to the pharmacists' pool.
- PharmacistUser runs visits: scan the QR token (or type ID + access code by hand), then
  dispense all or part of what remains, sometimes in two requests, sometimes sending the same
  request again with the same Idempotency-Key (the answer must be the first one). A few
  visits bring back a fully dispensed prescription or ask for one pack too many: the 409
  they get is expected and counted apart; a 409 anywhere else is a failure.
- PatientUser lists their prescriptions and reads who looked at one of them.

Each prescription is held by one pharmacist at a time (the pool is split between locust
processes and a visit takes its prescription out of it), so every 409 is one the scenario
asked for and every other answer can be checked exactly (remaining quantities included).

Cost: one locust core must offer the national burst peak, so the client side is kept cheap.
It was ~650 µs of locust CPU per request, ~80 % of it in locust's HTTP stack
(FastHttpSession, geventhttpclient), not in the scenario. The personas are FastHttpUser
(locust's users, pacing, host, timeouts, statistics) whose requests go through
loadkit.KeepAliveClient, a minimal HTTP/1.1 keep-alive client (one connection per user,
each request one pre-framed write); bodies are encoded and answers decoded with orjson and
each identity's headers are encoded once. Every request is still reported to locust's
statistics (CSV, HTML) and to the recorder through ``events.request``, success or failure
decided by the same checks.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import loadkit
import orjson
from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import CatchResponseError
from locust.runners import MasterRunner, WorkerRunner
from locust.user.wait_time import constant_throughput

if "ORDONUM_LOAD_PLAN" not in os.environ:
    raise SystemExit("ORDONUM_LOAD_PLAN is not set: run the load test with `make load`")
PLAN = loadkit.Plan.load(Path(os.environ["ORDONUM_LOAD_PLAN"]))
RECORDER = loadkit.Recorder()

Headers = bytes  # pre-encoded header lines


def headers_for(bearer: str, body: bool = True) -> Headers:
    """An identity's request headers, built once (a request that sends a body says it is JSON)."""
    h = f"Authorization: Bearer {bearer}\r\n"
    if body:
        h += "Content-Type: application/json\r\n"
    return h.encode()


def new_key() -> str:
    """A fresh Idempotency-Key: 128 random bits, as uuid4 but without building a UUID."""
    return os.urandom(16).hex()


class World:
    """What one locust process knows: identities, medicines, prescriptions it may use."""

    def __init__(self) -> None:
        self.rng = random.Random()
        self.ids: loadkit.Identities | None = None
        self.meds: list[loadkit.Medicine] = []
        self.pool: list[dict[str, Any]] = []  # prescriptions with something left to dispense
        self.done: list[dict[str, Any]] = []  # fully dispensed (kept for the late visits)
        self.known: list[tuple[str, str]] = []  # (id, patient NIR) for the patients
        # each identity's request headers (its bearer token), built once
        self.prescribers: list[Headers] = []
        self.pharmacists: list[Headers] = []
        self.patients: dict[str, Headers] = {}  # by NIR

    def load(self, share: int, shares: int) -> None:
        self.ids = loadkit.Identities.load(Path(PLAN.identities))
        self.prescribers = [headers_for(p["bearer"]) for p in self.ids.prescribers]
        self.pharmacists = [headers_for(p["bearer"]) for p in self.ids.pharmacists]
        self.patients = {p["nir"]: headers_for(p["bearer"], body=False) for p in self.ids.patients}
        self.meds = loadkit.load_medicines()
        for i, entry in enumerate(loadkit.read_jsonl(Path(PLAN.pool))):
            if i % shares == share:
                self.add(entry)

    def add(self, entry: dict[str, Any]) -> None:
        """A prescription's paper; from `ordonum demo` only the ID and token are known."""
        quantities = entry.get("quantities")
        entry.setdefault("remaining", None if quantities is None else list(quantities))
        entry.setdefault("visits", 0)
        self.pool.append(entry)
        if entry.get("nir"):
            self.known.append((entry["id"], entry["nir"]))

    def take(self) -> dict[str, Any] | None:
        """A random prescription out of the pool (swap-remove: O(1))."""
        if not self.pool:
            return None
        i = self.rng.randrange(len(self.pool))
        self.pool[i], self.pool[-1] = self.pool[-1], self.pool[i]
        return self.pool.pop()

    def give_back(self, entry: dict[str, Any]) -> None:
        entry["visits"] += 1
        (self.pool if any(entry["remaining"]) else self.done).append(entry)


WORLD = World()


@events.test_start.add_listener
def _load_world(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner) or WORLD.ids is not None:
        return
    share = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    shares = max(1, int(os.environ.get("ORDONUM_LOAD_WORKERS", "1")))
    WORLD.load(share, shares)
    # No cyclic GC in the load generator while it measures. The world (identities, headers,
    # medicines, papers) and the papers the prescribers add grow through the run, and every
    # full collection walks them: measured at x1, 7-8 pauses of 80-185 ms per 2-minute run,
    # each adding its length to every request in flight (x1 p99 75 ms with the world frozen
    # but collections on, 53.5 ms with none; the server was the same). Reference counting
    # still frees everything that is not a cycle, and the process lives for one bounded run:
    # its RSS grew from 33 to 147 MB over that x1 run; the cycles of requests that fail past
    # the knee (exceptions and their tracebacks) wait for the process to exit.
    gc.collect()
    gc.freeze()
    gc.disable()


@events.request.add_listener
def _record(
    name: str,
    start_time: float,
    response_time: float,
    response: Any,
    exception: BaseException | None,
    **_: Any,
) -> None:
    failed = exception is not None
    expected_409 = not failed and response is not None and response.status_code == 409
    RECORDER.add(name, start_time, response_time, failed, expected_409)


def _dump(**_: Any) -> None:
    if RECORDER.cells:
        RECORDER.dump(Path(PLAN.out) / f"recorder-{os.getpid()}.json.gz")


events.test_stop.add_listener(_dump)
events.quitting.add_listener(_dump)


class Persona(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(PLAN.user_rate)
    network_timeout = 10.0
    connection_timeout = 5.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        assert self.host is not None
        self.http = loadkit.KeepAliveClient(
            self.host, self.connection_timeout, self.network_timeout
        )
        self.fire = environment.events.request.fire

    def on_stop(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        path: str,
        name: str,
        headers: Headers,
        body: bytes | None = None,
        *,
        expect: tuple[int, ...] = (200,),
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        """One request; returns the JSON answer, or None after reporting the request failed.

        ``expect=(409,)`` marks a 409 the scenario asked for: success, counted apart. The
        request is reported to locust (statistics, the recorder) like FastHttpSession does:
        response time from sending to the last byte of the answer, then success or failure.
        """
        start = time.time()
        t0 = time.perf_counter()
        resp: loadkit.Answer | None = None
        content = b""
        error: loadkit.HttpError | None = None
        try:
            resp = self.http.request(method, path, headers, body)
            content = resp.content
        except loadkit.HttpError as e:
            error = e
        ms = (time.perf_counter() - t0) * 1000
        answer: Any = None
        problem: str | None = None
        if resp is None:
            # no answer: the request timed out or the connection failed. It comes back as None
            # like any failure, so the visit stops here: the server may still apply it later,
            # and the next step would race it.
            problem = f"HTTP 0 (expected {expect}): no answer ({error!r})"
        elif resp.status_code not in expect:
            text = content[:300].decode("utf-8", "replace")
            problem = f"HTTP {resp.status_code} (expected {expect}): {text}"
        elif resp.status_code != 409:
            try:
                answer = orjson.loads(content)
            except orjson.JSONDecodeError:
                problem = f"HTTP {resp.status_code} without a JSON body"
            else:
                problem = check(answer) if check is not None else None
        self.fire(
            request_type=method,
            name=name,
            response_time=ms,
            response_length=len(content),
            response=resp,
            context={},
            exception=CatchResponseError(problem) if problem else None,
            start_time=start,
            url=path,
        )
        return None if problem else answer


def _line_no(line: dict[str, Any]) -> Any:
    return line["line"]


def _has(*keys: str) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        missing = [k for k in keys if not isinstance(body, dict) or k not in body]
        return f"answer lacks {missing}" if missing else None

    return check


class PrescriberUser(Persona):
    weight = 28

    @task
    def create(self) -> None:
        assert WORLD.ids is not None
        doc = WORLD.rng.choice(WORLD.prescribers)
        patient = WORLD.rng.choice(WORLD.ids.patients)
        body = loadkit.prescription_body(WORLD.rng, patient, WORLD.meds)
        created = self.call(
            "POST",
            "/v1/prescriptions",
            "create",
            doc,
            orjson.dumps(body),
            expect=(201,),
            check=_has("id", "token", "access_code", "acknowledgement"),
        )
        if created is not None:
            WORLD.add(loadkit.pool_entry(created, body))


Step = Callable[[], None]


class PharmacistUser(Persona):
    weight = 72

    def on_start(self) -> None:
        self.steps: list[Step] = []

    @task
    def tick(self) -> None:
        if not self.steps:
            self.start_visit()
        if self.steps:
            self.steps.pop(0)()

    # a visit: one scan, then the dispensation requests the scan made possible

    def start_visit(self) -> None:
        assert WORLD.ids is not None
        rng = WORLD.rng
        who = rng.choice(WORLD.pharmacists)
        manual = rng.random() < PLAN.p_manual  # only papers whose access code we hold
        if WORLD.done and rng.random() < PLAN.p_late:
            entry = rng.choice(WORLD.done)  # the paper comes back after full dispensation
            manual = manual and entry.get("access_code") is not None
            self.steps = [lambda: self.scan(entry, who, manual, late=True)]
            return
        taken = WORLD.take()
        if taken is None:
            events.request.fire(
                request_type="POOL",
                name="no prescription left to scan",
                start_time=time.time(),
                response_time=0,
                response_length=0,
                response=None,
                context={},
                exception=RuntimeError("the pool of issued prescriptions is empty"),
            )
            return
        manual = manual and taken.get("access_code") is not None
        self.steps = [lambda: self.scan(taken, who, manual, late=False)]

    def scan(self, entry: dict[str, Any], who: Headers, manual: bool, late: bool) -> None:
        if manual:
            body = {"id": entry["id"], "access_code": entry["access_code"]}
            name = "scan (typed ID + code)"
        else:
            body, name = {"token": entry["token"]}, "scan (QR token)"
        rx = entry["id"]

        def check(answer: Any) -> str | None:
            if not isinstance(answer, dict) or answer.get("id") != rx:
                return "scan answered for another prescription"
            lines = answer.get("lines")
            if not isinstance(lines, list) or not lines:
                return "scan answer without lines"
            if any(line["line"] != i for i, line in enumerate(lines)):  # not in line order
                lines = sorted(lines, key=_line_no)
            remaining = [line["remaining"] for line in lines]
            if entry["remaining"] is None:  # a demo prescription, first seen: learn it
                entry["quantities"] = [line["quantity"] for line in lines]
                entry["remaining"] = remaining
            expected = [0] * len(remaining) if late else entry["remaining"]
            if remaining != expected:
                return f"remaining {remaining}, expected {expected}"
            return None

        answer = self.call("POST", "/v1/scan", name, who, orjson.dumps(body), check=check)
        if answer is None:
            if not late:
                WORLD.give_back(entry)
            return
        proof = {"access_code": entry["access_code"]} if manual else {"token": entry["token"]}
        if late:  # fully dispensed: one more pack must be refused
            lines = [{"line": 0, "quantity": 1, "intervention": {"kind": "none"}}]
            self.steps.append(lambda: self.dispense(entry, who, proof, lines, expect_409=True))
            return
        self.plan_dispensation(entry, who, proof)

    def plan_dispensation(self, entry: dict[str, Any], who: Headers, proof: dict[str, str]) -> None:
        rng, left = WORLD.rng, entry["remaining"]
        take = list(left)
        if entry["visits"] == 0 and sum(left) > 1 and rng.random() < PLAN.p_partial:
            last = max(i for i, q in enumerate(take) if q > 0)
            take[last] = take[last] // 2 if sum(take) - take[last] > 0 else take[last] - 1
        items = [(i, q) for i, q in enumerate(take) if q > 0]
        if not items:
            WORLD.give_back(entry)
            return
        if rng.random() < PLAN.p_over:  # one pack too many on a line: must be refused
            i = items[0][0]
            over = [{"line": i, "quantity": left[i] + 1, "intervention": {"kind": "none"}}]
            self.steps.append(lambda: self.dispense(entry, who, proof, over, expect_409=True))
        parts = [items]
        if len(items) > 1 and rng.random() < PLAN.p_second:
            cut = rng.randrange(1, len(items))
            parts = [items[:cut], items[cut:]]
        requests: list[tuple[list[dict[str, Any]], str, bool]] = []  # (lines, key, retry)
        for n, part in enumerate(parts):
            lines = [{"line": i, "quantity": q, "intervention": {"kind": "none"}} for i, q in part]
            requests.append((lines, new_key(), False))
            if n == 0 and rng.random() < PLAN.p_retry:
                requests.append((lines, requests[-1][1], True))
        for n, (lines, key, retry) in enumerate(requests):
            end = n == len(requests) - 1
            self.steps.append(
                lambda ln=lines, k=key, r=retry, e=end: self.dispense(
                    entry, who, proof, ln, key=k, retry=r, end_visit=e
                )
            )

    def dispense(
        self,
        entry: dict[str, Any],
        who: Headers,
        proof: dict[str, str],
        lines: list[dict[str, Any]],
        *,
        key: str | None = None,
        expect_409: bool = False,
        retry: bool = False,
        end_visit: bool = False,
    ) -> None:
        body = {**proof, "lines": lines}
        name = "dispense (retry, same key)" if retry else "dispense"
        if not retry and not expect_409:
            for line in lines:
                entry["remaining"][line["line"]] -= line["quantity"]
        expected = [{"line": i, "remaining": r} for i, r in enumerate(entry["remaining"])]
        first = entry.get("answers", {}).get(key)

        def check(answer: Any) -> str | None:
            if not isinstance(answer, dict) or "dispensation_id" not in answer:
                return "answer lacks dispensation_id"
            if retry:
                if answer["dispensation_id"] != first:
                    return "a retry with the same Idempotency-Key wrote a new dispensation"
                return None
            got = answer.get("lines", [])
            if got != expected:  # expected is in line order; the answer may not be
                got = sorted(got, key=_line_no)
                if got != expected:
                    return f"remaining {got}, expected {expected}"
            return None

        answer = self.call(
            "POST",
            f"/v1/prescriptions/{entry['id']}/dispensations",
            name,
            b"%sIdempotency-Key: %s\r\n" % (who, (key or new_key()).encode()),
            orjson.dumps(body),
            expect=(409,) if expect_409 else (200, 201) if retry else (201,),
            check=None if expect_409 else check,
        )
        if answer is not None and key is not None and not retry:
            entry.setdefault("answers", {})[key] = answer["dispensation_id"]
        if answer is None and not retry and not expect_409:
            self.steps.clear()  # the state is unknown: leave this prescription alone
            return
        if end_visit:
            entry.pop("answers", None)
            WORLD.give_back(entry)


class PatientUser(Persona):
    weight = 5

    @task
    def read(self) -> None:
        if not WORLD.known:
            return
        rx, nir = WORLD.rng.choice(WORLD.known)
        who = WORLD.patients[nir]
        if WORLD.rng.random() < 0.5:
            self.call("GET", "/v1/me/prescriptions", "patient: my prescriptions", who)
        else:
            self.call("GET", f"/v1/prescriptions/{rx}/access-log", "patient: access log", who)


def _weights() -> None:
    """Persona weights proportional to their share of the first stage's users."""
    if PLAN.stages:
        users = PLAN.stages[0].users
        PrescriberUser.weight = users["PrescriberUser"]
        PharmacistUser.weight = users["PharmacistUser"]
        PatientUser.weight = users["PatientUser"]


_weights()


class NationalPeak(LoadTestShape):
    """Ramp to the national burst peak, hold it, then step up (the plan's multiples)."""

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if not getattr(self, "_t0_written", False):
            (Path(PLAN.out) / "shape.json").write_text(f'{{"t0": {time.time() - t}}}')
            self._t0_written = True
        previous = 0
        for stage in PLAN.stages:
            users = sum(stage.users.values())
            if t < stage.end_s:
                rate = max(1.0, abs(users - previous) / max(stage.ramp_s, 1.0))
                return users, rate
            previous = users
        return None
