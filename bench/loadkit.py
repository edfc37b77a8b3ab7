"""The pieces of the national-peak load test that are not locust: identities, bearer tokens,
prescription bodies, the load plan and the per-flow latency recorder.

`bench/load.py` (`make load`) prepares a run with these, `bench/locustfile.py` replays it, and
`tests/test_load_smoke.py` checks both. Design notes:

- **Identities** are synthetic but valid: RPPS (11 digits) and FINESS (9 digits) end with a
  Luhn key, NIR (13 digits) with its key 97 - (NIR mod 97); `ordonum.checks` accepts them
  and python-stdnum (an independent implementation) does too (tests/test_loadkit.py).
- **Bearer tokens** are what the service's dev identity provider would issue: one template
  token per role is minted with the real CLI (`ordonum token`), and the identifiers in its
  claims are swapped for each identity before signing again with the same key
  (`DATA/keys/idp-signing.pem`). The header, audience and issuer are whatever the service
  chose, so the load test follows it; minting 20,000 tokens takes a second in-process.
- **The plan** turns the sizing mix (`bench/sizing.py`, the national burst peak) into locust
  users: every user sends one request per tick at a constant rate, so a persona's request
  rate is its user count times that rate, and the shape only changes user counts.
- **The HTTP client** of the personas is a minimal HTTP/1.1 keep-alive client (one
  connection per locust user, Content-Length framing only). locust's FastHttpSession and
  geventhttpclient under it cost ~330-420 µs of CPU per request on this machine at the
  mix's pacing, enough to keep one locust core from offering the national burst peak; the
  same requests through this client cost ~200 µs (socket and scheduling included).
- **The recorder** keeps, per flow and per wall-clock second, the request count, the
  unexpected failures, the expected 409s and a latency histogram (0.05 ms buckets below
  10 ms, 0.5 ms below 100 ms, 5 ms above). Each locust process writes its own file; merging
  is adding counts, so percentiles over any window are exact to a bucket.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # `sizing` sits next to this file
    sys.path.insert(0, str(BENCH))

import sizing  # noqa: E402

# --- identifiers with their check keys ---------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants so far (every
    thread); NaN if it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return math.nan
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def luhn_key(body: str) -> str:
    """The Luhn check digit to append to ``body`` (digits only)."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = ord(ch) - 48
        if i % 2 == 0:  # doubled: the rightmost digit of the body sits next to the key
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def rpps(rng: random.Random) -> str:
    """An 11-digit RPPS number (health professional), '10' + 8 digits + Luhn key."""
    body = "10" + f"{rng.randrange(10**8):08d}"
    return body + luhn_key(body)


def finess(rng: random.Random) -> str:
    """A 9-digit FINESS number (establishment): department + 6 digits + Luhn key."""
    body = f"{_department(rng)}{rng.randrange(10**6):06d}"
    return body + luhn_key(body)


def _department(rng: random.Random) -> str:
    d = rng.randrange(1, 96)
    return "21" if d == 20 else f"{d:02d}"  # 20 is Corsica (2A/2B): keep the NIR numeric


def nir(rng: random.Random, birth: date, sex: int) -> str:
    """A 15-character NIR: sex, year, month, department, commune, order, then the key."""
    body = (
        f"{sex}{birth.year % 100:02d}{birth.month:02d}{_department(rng)}"
        f"{rng.randrange(1, 991):03d}{rng.randrange(1, 1000):03d}"
    )
    return body + f"{97 - int(body) % 97:02d}"


# --- bearer tokens -------------------------------------------------------------------------

ROLES = ("prescriber", "pharmacist", "patient")
FIRST = ("Jeanne", "Louis", "Camille", "Hugo", "Léa", "Nathan", "Manon", "Jules", "Chloé", "Éric")
LAST = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy")


@dataclass(frozen=True)
class Identities:
    """Who takes part: bearer tokens per role, and each patient's NIR, name, birth date."""

    prescribers: list[dict[str, str]]  # {"rpps", "bearer"}
    pharmacists: list[dict[str, str]]  # {"finess", "rpps", "bearer"}
    patients: list[dict[str, str]]  # {"nir", "name", "birth_date", "bearer"}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Identities:
        return cls(**json.loads(path.read_text()))


def _ordonum_cli() -> list[str]:
    script = Path(sys.executable).with_name("ordonum")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ordonum"]


def cli_template(data: Path, role: str, ident: str, rpps_: str | None) -> str:
    """One bearer token minted by the service's own CLI (`ordonum token`)."""
    cmd = [*_ordonum_cli(), "token", "--role", role, "--id", ident, "--data", str(data)]
    if rpps_ is not None:
        cmd += ["--rpps", rpps_]
    cmd += ["--ttl", "14400"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def _b64json(part: str) -> dict[str, Any]:
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    value: dict[str, Any] = json.loads(raw)
    return value


def _swap(value: Any, old: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _swap_in(value, old)
    if isinstance(value, dict):
        return {k: _swap(v, old) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, old) for v in value]
    return value


def _swap_in(text: str, old: Mapping[str, str]) -> str:
    for a, b in old.items():
        text = text.replace(a, b)
    return text


class TokenMinter:
    """Re-signs one CLI-minted template token per role with other identifiers.

    Works with any claim layout the service picked: every claim string that equals (or
    contains) the template's identifiers gets the new ones; `iat`/`exp` are moved to now.
    """

    def __init__(self, data: Path, template: Any = cli_template) -> None:
        import jwt  # pyjwt: the service's own JWT library
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self._jwt = jwt
        self._key = load_pem_private_key((data / "keys" / "idp-signing.pem").read_bytes(), None)
        rng = random.Random(0)
        self._templates: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, str]]] = {}
        for role in ROLES:
            ids = {
                "prescriber": {"id": rpps(rng)},
                "pharmacist": {"id": finess(rng), "rpps": rpps(rng)},
                "patient": {"id": nir(rng, date(1970, 1, 1), 1)},
            }[role]
            token = template(data, role, ids["id"], ids.get("rpps"))
            header_b64, claims_b64, _ = token.split(".")
            header, claims = _b64json(header_b64), _b64json(claims_b64)
            if ids["id"] not in json.dumps(claims):
                raise RuntimeError(f"template {role} token does not carry its identifier")
            self._templates[role] = (header, claims, ids)

    def mint(self, role: str, ident: str, rpps_: str | None = None, ttl_s: int = 4 * 3600) -> str:
        header, claims, ids = self._templates[role]
        old = {ids["id"]: ident}
        if rpps_ is not None and "rpps" in ids:
            old[ids["rpps"]] = rpps_
        new = _swap(claims, old)
        now = int(time.time())
        if "iat" in new:
            new["iat"] = now
        if "nbf" in new:
            new["nbf"] = now
        new["exp"] = now + ttl_s
        extra = {k: v for k, v in header.items() if k not in ("alg", "typ")}
        token: str = self._jwt.encode(new, self._key, algorithm=header["alg"], headers=extra)
        return token


def make_identities(
    data: Path,
    prescribers: int,
    pharmacies: int,
    patients: int,
    seed: int = 2025,
    template: Any = cli_template,
) -> Identities:
    """Distinct, valid identities with their bearer tokens (deterministic for a seed)."""
    rng = random.Random(seed)
    minter = TokenMinter(data, template)

    def distinct(n: int, make: Any) -> list[str]:
        seen: dict[str, None] = {}
        while len(seen) < n:
            seen[make()] = None
        return list(seen)

    docs = distinct(prescribers, lambda: rpps(rng))
    shops = distinct(pharmacies, lambda: finess(rng))
    staff = distinct(pharmacies, lambda: rpps(rng))
    people: dict[str, tuple[str, str]] = {}
    while len(people) < patients:
        birth = date(1930, 1, 1) + timedelta(days=rng.randrange(365 * 90))
        sex = rng.choice((1, 2))
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        people.setdefault(nir(rng, birth, sex), (name, birth.isoformat()))
    return Identities(
        prescribers=[{"rpps": d, "bearer": minter.mint("prescriber", d)} for d in docs],
        pharmacists=[
            {"finess": f, "rpps": r, "bearer": minter.mint("pharmacist", f, r)}
            for f, r in zip(shops, staff, strict=True)
        ],
        patients=[
            {"nir": n, "name": nm, "birth_date": b, "bearer": minter.mint("patient", n)}
            for n, (nm, b) in people.items()
        ],
    )


# --- medicines and prescription bodies -------------------------------------------------------


@dataclass(frozen=True)
class Medicine:
    cip13: str
    name: str
    pack: str


def load_medicines() -> list[Medicine]:
    """The marketed medicines of the list shipped in the package (`ordonum.medicines`)."""
    from ordonum import medicines

    # the same call as the service's demo loader (ordonum/service/demo.py)
    return [Medicine(m.cip13, m.name, m.presentation) for m in medicines.load() if m.marketed]


DOSAGES = (
    "1 comprimé matin et soir pendant 7 jours",
    "1 prise le matin",
    "2 bouffées 3 fois par jour si besoin",
    "1 application le soir pendant 15 jours",
    "selon schéma, voir notice",
)


def prescription_body(
    rng: random.Random,
    patient: Mapping[str, str],
    meds: list[Medicine],
    quantity: int | None = None,
) -> dict[str, Any]:
    """A valid creation body: 1 to 4 lines of real medicines, quantities of 1 to 3 packs."""
    lines = []
    for med in rng.sample(meds, rng.choice((1, 1, 2, 2, 3, 4))):
        lines.append(
            {
                "label": f"{med.name} — {med.pack}"[:200],
                "cip13": med.cip13,
                "dosage": rng.choice(DOSAGES),
                "quantity": quantity or rng.choice((1, 1, 2, 3)),
                "renewals": 0,
                "substitutable": rng.random() < 0.8,
            }
        )
    return {
        "patient": {k: patient[k] for k in ("nir", "name", "birth_date")},
        "lines": lines,
        "valid_days": 90,
        "prescriber_may_view_dispensations": rng.random() < 0.9,
    }


def pool_entry(created: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """What a pharmacist needs to find a prescription again: the paper's token and code."""
    return {
        "id": created["id"],
        "token": created["token"],
        "access_code": created["access_code"],
        "nir": body["patient"]["nir"],
        "quantities": [line["quantity"] for line in body["lines"]],
    }


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# --- the plan: sizing mix -> users and stages ------------------------------------------------

# Request names, as locust and the report show them, and the sizing flow each counts towards.
FLOWS: dict[str, str] = {
    "create": "prescription creations",
    "scan (QR token)": "scan lookups",
    "scan (typed ID + code)": "scan lookups",
    "dispense": "dispensation writes",
    "dispense (retry, same key)": "dispensation writes",
    "patient: my prescriptions": "patient reads",
    "patient: access log": "patient reads",
}
PERSONA_FLOWS = {
    "PrescriberUser": ("prescription creations",),
    "PharmacistUser": ("scan lookups", "dispensation writes"),
    "PatientUser": ("patient reads",),
}


@dataclass(frozen=True)
class Stage:
    name: str
    multiple: float  # of the national burst peak
    start_s: float  # from the start of the shape
    ramp_s: float
    hold_s: float
    users: dict[str, int]  # per persona class
    target_rps: dict[str, float]  # per sizing flow, and "total"

    @property
    def end_s(self) -> float:
        return self.start_s + self.ramp_s + self.hold_s

    def window(self, settle_s: float) -> tuple[float, float]:
        """The measured part of the hold (shape time): after the ramp and a settling time."""
        lo = self.start_s + self.ramp_s + min(settle_s, self.hold_s / 4)
        return lo, self.end_s


@dataclass(frozen=True)
class Plan:
    """Everything a locust process needs; load.py writes it, the locustfile reads it."""

    identities: str  # path of the Identities JSON
    pool: str  # path of the JSONL of prescriptions issued before the run
    out: str  # where each process writes its recorder file
    user_rate: float  # requests per second per user (constant throughput)
    p_manual: float  # share of scans typed by hand (ID + access code)
    p_retry: float  # share of visits whose dispensation is sent again, same Idempotency-Key
    p_second: float  # share of visits that record their dispensation in two requests
    p_partial: float  # share of first visits that dispense only part of the prescription
    p_late: float  # share of visits on a prescription already fully dispensed (409 expected)
    p_over: float  # share of dispensations asking one pack too many (409 expected)
    settle_s: float
    stages: list[Stage] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Plan:
        raw = json.loads(path.read_text())
        raw["stages"] = [Stage(**s) for s in raw["stages"]]
        return cls(**raw)

    @property
    def duration_s(self) -> float:
        return self.stages[-1].end_s if self.stages else 0.0


def national_mix(patient_share: float) -> dict[str, float]:
    """Burst rates per flow (req/s) from bench/sizing.py, plus the patient persona on top."""
    table = {r.flow: r.burst_per_s for r in sizing.rates(sizing.Assumptions())}
    mix = {k: v for k, v in table.items() if k != "total (mixed)"}
    base = table["total (mixed)"]
    mix["patient reads"] = mix.get("patient reads", 0.0) + patient_share * base
    return mix


def make_plan(
    *,
    identities: Path,
    pool: Path,
    out: Path,
    multiples: list[float],
    first_ramp_s: float = 20.0,
    first_hold_s: float = 60.0,
    step_ramp_s: float = 5.0,
    step_hold_s: float = 30.0,
    settle_s: float = 5.0,
    user_rate: float = 5.0,
    patient_share: float = 0.05,
    p_manual: float = 0.10,
    p_retry: float = 0.10,
    p_partial: float = 0.5,
    p_late: float = 0.01,
    p_over: float = 0.01,
) -> Plan:
    """Stages at ``multiples`` of the national burst peak, users sized from the mix.

    A pharmacist visit is one scan then ``writes/scans`` dispensation requests on average:
    the first, a retry with the same key (``p_retry``) and a second request for the rest of
    the visit (``p_second``, derived so that the mix matches the sizing).
    """
    mix = national_mix(patient_share)
    writes_per_scan = mix["dispensation writes"] / mix["scan lookups"]
    p_second = min(1.0, max(0.0, writes_per_scan - 1.0 - p_retry))
    persona_rate = {p: sum(mix[f] for f in flows) for p, flows in PERSONA_FLOWS.items()}
    stages, t = [], 0.0
    for i, m in enumerate(multiples):
        users = {p: max(1, math.ceil(m * r / user_rate)) for p, r in persona_rate.items()}
        target = {f: m * r for f, r in mix.items()}
        target["total"] = sum(target.values())
        ramp, hold = (first_ramp_s, first_hold_s) if i == 0 else (step_ramp_s, step_hold_s)
        stages.append(Stage(f"x{m:g}", m, t, ramp, hold, users, target))
        t += ramp + hold
    return Plan(
        identities=str(identities),
        pool=str(pool),
        out=str(out),
        user_rate=user_rate,
        p_manual=p_manual,
        p_retry=p_retry,
        p_second=p_second,
        p_partial=p_partial,
        p_late=p_late,
        p_over=p_over,
        settle_s=settle_s,
        stages=stages,
    )


# --- the personas' HTTP client ------------------------------------------------------------


class HttpError(Exception):
    """No usable answer: the connection failed or timed out, or the answer was malformed."""


class _Stale(Exception):
    """A kept-alive connection the server had already closed: nothing was answered on it."""


@dataclass(slots=True)
class Answer:
    """An HTTP answer: what the load test looks at."""

    status_code: int
    content: bytes


class KeepAliveClient:
    """A minimal HTTP/1.1 client over one keep-alive connection, for the load generator.

    Made for the service it talks to, cheaply: the request is one pre-framed write (headers
    given as pre-encoded ``Name: value\\r\\n`` lines), the answer must carry a
    Content-Length (chunked answers raise HttpError). The socket timeouts are per operation,
    like geventhttpclient's network timeout. A kept-alive connection that the server closed
    before answering (its idle timeout) is replaced and the request sent again once, as
    http.client and geventhttpclient do; any other failure raises HttpError and drops the
    connection. Cooperative under gevent (locust patches the socket module).
    """

    def __init__(self, url: str, connect_timeout: float = 5.0, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"KeepAliveClient needs an http:// URL with a host, got {url!r}")
        self.address = (parts.hostname, parts.port or 80)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._prefix = f"Host: {parts.netloc}\r\nUser-Agent: ordonum-load\r\n".encode()
        self._sock: socket.socket | None = None
        self.connections = 0  # opened so far (keep-alive shows as one per client)

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    def request(
        self, method: str, path: str, headers: bytes = b"", body: bytes | None = None
    ) -> Answer:
        head = b"%s %s HTTP/1.1\r\n%s%s" % (method.encode(), path.encode(), self._prefix, headers)
        if body is not None:
            message = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        else:
            message = head + b"\r\n"
        while True:
            reused = self._sock is not None
            try:
                return self._exchange(message)
            except _Stale:
                self.close()
                if not reused:
                    raise HttpError("the connection closed without an answer") from None
            except (OSError, ValueError, IndexError) as e:  # timeouts are OSErrors
                self.close()
                raise HttpError(f"{type(e).__name__}: {e}") from e
            except HttpError:
                self.close()
                raise

    def _exchange(self, message: bytes) -> Answer:
        sock = self._sock
        if sock is None:
            sock = socket.create_connection(self.address, timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            self._sock = sock
            self.connections += 1
        try:
            sock.sendall(message)
            data = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _Stale() from e
        if not data:
            raise _Stale()
        end = data.find(b"\r\n\r\n")
        while end < 0:
            more = sock.recv(65536)
            if not more:
                raise HttpError("the connection closed in the middle of the answer's head")
            data += more
            end = data.find(b"\r\n\r\n", max(0, len(data) - len(more) - 3))
        lines = data[:end].split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 "):
            raise HttpError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
        status = int(lines[0][9:12])
        length, close = -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise HttpError(f"a {value.strip().decode()} answer: only Content-Length is read")
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length < 0:
            if status not in (204, 304) and not 100 <= status < 200:
                raise HttpError(f"HTTP {status} answer without Content-Length")
            length = 0
        body = data[end + 4 :]
        while len(body) < length:
            more = sock.recv(max(65536, length - len(body)))
            if not more:
                raise HttpError("the connection closed in the middle of the answer's body")
            body += more
        if len(body) > length:
            raise HttpError(f"{len(body) - length} bytes after the answer (none was asked for)")
        if close:
            self.close()
        return Answer(status, body)


# --- the recorder ------------------------------------------------------------------------------


def bucket_us(ms: float) -> int:
    """The histogram bucket (lower edge, µs) of a latency in ms."""
    us = int(ms * 1000)
    if us < 10_000:
        return us - us % 50
    if us < 100_000:
        return us - us % 500
    return us - us % 5000


def bucket_width_us(lower: int) -> int:
    return 50 if lower < 10_000 else 500 if lower < 100_000 else 5000


class Recorder:
    """Per flow and wall-clock second: [requests, unexpected failures, expected 409s, hist]."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, int], list[Any]] = {}

    def add(self, flow: str, start: float, ms: float, failed: bool, expected_409: bool) -> None:
        key = (flow, int(start))
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = [0, 0, 0, {}]
        cell[0] += 1
        if failed:
            cell[1] += 1
        if expected_409:
            cell[2] += 1
        hist = cell[3]
        b = bucket_us(ms)
        hist[b] = hist.get(b, 0) + 1

    def dump(self, path: Path) -> None:
        rows = [[flow, sec, *cell[:3], cell[3]] for (flow, sec), cell in self.cells.items()]
        tmp = path.with_suffix(".tmp")
        with gzip.open(tmp, "wt") as f:
            json.dump(rows, f)
        os.replace(tmp, path)


def load_records(out: Path) -> list[tuple[str, int, int, int, int, dict[int, int]]]:
    """All processes' recorder rows: (flow, second, requests, failures, expected 409s, hist)."""
    rows = []
    for path in sorted(out.glob("recorder-*.json.gz")):
        with gzip.open(path, "rt") as f:
            for flow, sec, n, fail, exp, hist in json.load(f):
                rows.append((flow, sec, n, fail, exp, {int(k): v for k, v in hist.items()}))
    return rows


def percentile_ms(hist: Mapping[int, int], q: float) -> float:
    """The q-quantile (0..1) of a histogram, as the upper edge of its bucket (conservative)."""
    total = sum(hist.values())
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(q * total))
    seen = 0
    for lower in sorted(hist):
        seen += hist[lower]
        if seen >= rank:
            return (lower + bucket_width_us(lower)) / 1000
    raise AssertionError("unreachable")
