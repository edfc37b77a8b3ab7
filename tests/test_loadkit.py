"""The load test's own machinery: identities, tokens, plan, recorder, analysis and gate.

The smoke run against a real server is tests/test_load_smoke.py; these are the parts that
must be right for its numbers to mean anything.
"""

from __future__ import annotations

import math
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import load  # noqa: E402
import loadkit  # noqa: E402

# --- identifiers: checked against python-stdnum, an independent implementation -------------


@given(st.integers(0, 2**32))
def test_generated_identifiers_carry_correct_check_keys(seed: int) -> None:
    rng = random.Random(seed)
    r, f = loadkit.rpps(rng), loadkit.finess(rng)
    n = loadkit.nir(rng, date(1984, 3, 15), 2)
    assert len(r) == 11
    assert luhn.is_valid(r)
    assert len(f) == 9
    assert luhn.is_valid(f)
    assert len(n) == 15
    assert stdnum_nir.is_valid(n)
    assert n[:5] == "28403"


@given(st.text("0123456789", min_size=1, max_size=20))
def test_luhn_key_agrees_with_stdnum(body: str) -> None:
    assert loadkit.luhn_key(body) == luhn.calc_check_digit(body)


def test_a_wrong_key_is_caught_by_the_oracle() -> None:
    rng = random.Random(1)
    r = loadkit.rpps(rng)
    wrong = r[:-1] + str((int(r[-1]) + 1) % 10)
    assert not luhn.is_valid(wrong)


# --- bearer tokens ---------------------------------------------------------------------------


@pytest.fixture
def idp(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "idp-signing.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return tmp_path, key


def _template(key: Ed25519PrivateKey) -> Any:
    """Stands for `ordonum token`: a claim layout the minter has never seen."""

    def mint(data: Path, role: str, ident: str, rpps: str | None) -> str:
        claims = {"sub": f"{role}/{ident}", "role": role, "aud": "ordonum-test", "exp": 1}
        claims["ids"] = {"id": ident, **({"rpps": rpps} if rpps else {})}
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "idp-1"})

    return mint


def test_minted_tokens_keep_the_template_layout_and_carry_each_identity(
    idp: tuple[Path, Ed25519PrivateKey],
) -> None:
    data, key = idp
    ids = loadkit.make_identities(data, 20, 10, 30, template=_template(key))
    public = key.public_key()
    assert len({p["rpps"] for p in ids.prescribers}) == 20
    assert len({p["nir"] for p in ids.patients}) == 30
    shop = ids.pharmacists[3]
    token = shop["bearer"]
    assert jwt.get_unverified_header(token)["kid"] == "idp-1"
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience="ordonum-test")
    assert claims["sub"] == f"pharmacist/{shop['finess']}"
    assert claims["ids"] == {"id": shop["finess"], "rpps": shop["rpps"]}
    assert claims["exp"] > time.time() + 3600
    patient = ids.patients[0]
    claims = jwt.decode(patient["bearer"], public, algorithms=["EdDSA"], audience="ordonum-test")
    assert claims == {**claims, "role": "patient", "sub": f"patient/{patient['nir']}"}
    assert stdnum_nir.is_valid(patient["nir"])
    assert patient["birth_date"][2:4] == patient["nir"][1:3]  # NIR year = birth year


# --- plan: the sizing mix in locust users -----------------------------------------------------


def test_plan_offers_the_sizing_mix_plus_the_patients(tmp_path: Path) -> None:
    plan = loadkit.make_plan(
        identities=tmp_path, pool=tmp_path, out=tmp_path, multiples=[1, 2, 10], user_rate=5
    )
    mix = loadkit.national_mix(0.05)
    assert round(mix["scan lookups"]) == 462
    assert round(mix["dispensation writes"]) == 617
    assert round(mix["prescription creations"]) == 420
    assert mix["patient reads"] == pytest.approx(0.05 * 1500, rel=0.01)
    peak, _, top = plan.stages
    assert peak.target_rps["total"] == pytest.approx(1.05 * 1500, rel=0.01)
    assert top.target_rps["total"] == pytest.approx(10 * peak.target_rps["total"])
    offered = sum(peak.users.values()) * plan.user_rate
    assert offered == pytest.approx(peak.target_rps["total"], rel=0.01)
    # a visit = 1 scan + (1 + p_second + p_retry) dispensation requests: the sizing ratio
    assert 1 + plan.p_second + plan.p_retry == pytest.approx(617 / 462, rel=0.01)
    assert [s.start_s for s in plan.stages] == [0, 80, 115]
    assert plan.duration_s == 150
    plan.save(tmp_path / "plan.json")
    assert loadkit.Plan.load(tmp_path / "plan.json") == plan


# --- the personas' HTTP client, against a scripted server --------------------------------------

Reply = Callable[[bytes, bytes], tuple[bytes, bool]]  # (head, body) -> (raw answer, then close)


class Scripted:
    """A one-connection-at-a-time HTTP server that answers with raw bytes from ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.seen: list[tuple[bytes, bytes]] = []  # (request head, body) as received
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                buf = b""
                while True:
                    while b"\r\n\r\n" not in buf:
                        more = conn.recv(65536)
                        if not more:
                            break
                        buf += more
                    if b"\r\n\r\n" not in buf:
                        break
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.lower() == b"content-length":
                            length = int(value)
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    body, buf = buf[:length], buf[length:]
                    self.seen.append((head, body))
                    raw, close = self.reply(head, body)
                    conn.sendall(raw)
                    if close:
                        break


@pytest.fixture
def scripted() -> Iterator[Callable[[Reply], Scripted]]:
    servers: list[Scripted] = []

    def make(reply: Reply) -> Scripted:
        servers.append(Scripted(reply))
        return servers[-1]

    yield make
    for s in servers:
        s.listener.close()


def _json(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        extra,
        body,
    )


def test_the_client_keeps_one_connection_and_frames_requests_exactly(
    scripted: Callable[[Reply], Scripted],
) -> None:
    srv = scripted(lambda head, body: (_json(201, b'{"echo":' + (body or b"null") + b"}"), False))
    client = loadkit.KeepAliveClient(srv.url)
    big = b'"' + b"x" * 200_000 + b'"'  # an answer bigger than one read
    answers = [
        client.request("POST", "/v1/scan", b"Authorization: Bearer t\r\n", b'{"a":1}'),
        client.request("GET", "/v1/me/prescriptions", b"Authorization: Bearer u\r\n"),
        client.request("POST", "/x", b"Idempotency-Key: k1\r\n", big),
    ]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert answers[0].content == b'{"echo":{"a":1}}'
    assert answers[1].content == b'{"echo":null}'
    assert answers[2].content == b'{"echo":' + big + b"}"
    client.close()
    assert client.connections == 1
    assert srv.connections == 1
    head, body = srv.seen[0]
    assert head.split(b"\r\n") == [
        b"POST /v1/scan HTTP/1.1",
        b"Host: " + srv.url.removeprefix("http://").encode(),
        b"User-Agent: ordonum-load",
        b"Authorization: Bearer t",
        b"Content-Length: 7",
    ]
    assert body == b'{"a":1}'
    assert b"Content-Length" not in srv.seen[1][0]  # a GET sends no body
    assert srv.seen[2][1] == big


def test_a_kept_alive_connection_the_server_closed_is_replaced_once(
    scripted: Callable[[Reply], Scripted],
) -> None:
    # the server answers, then closes (as after its idle timeout) without saying so
    srv = scripted(lambda head, body: (_json(200, b"{}"), True))
    client = loadkit.KeepAliveClient(srv.url)
    for _ in range(3):
        assert client.request("POST", "/p", b"", b"{}").status_code == 200
    client.close()
    assert len(srv.seen) == 3  # each request reached the server exactly once
    assert client.connections == srv.connections == 3


def test_connection_close_is_honoured(scripted: Callable[[Reply], Scripted]) -> None:
    srv = scripted(lambda head, body: (_json(200, b"{}", b"connection: close\r\n"), True))
    client = loadkit.KeepAliveClient(srv.url)
    client.request("GET", "/a")
    client.request("GET", "/b")
    assert client.connections == 2  # closed after each answer, as asked
    assert len(srv.seen) == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "a chunked answer: only Content-Length is read",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", "HTTP 200 answer without Content-Length"),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", "not an HTTP/1.1 answer"),
        (_json(200, b"{}") + b"junk", "4 bytes after the answer"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", "in the middle of the answer"),
    ],
)
def test_a_malformed_answer_is_an_error_and_drops_the_connection(
    scripted: Callable[[Reply], Scripted], raw: bytes, message: str
) -> None:
    srv = scripted(lambda head, body: (raw, True))
    client = loadkit.KeepAliveClient(srv.url)
    with pytest.raises(loadkit.HttpError, match=message):
        client.request("GET", "/")
    assert len(srv.seen) == 1  # never sent twice: the connection was fresh


def test_a_silent_server_times_out_and_a_closed_port_fails() -> None:
    with socket.create_server(("127.0.0.1", 0)) as quiet:  # accepts (backlog), never answers
        client = loadkit.KeepAliveClient(f"http://127.0.0.1:{quiet.getsockname()[1]}", timeout=0.2)
        t = time.monotonic()
        with pytest.raises(loadkit.HttpError, match="timed out"):
            client.request("GET", "/")
        assert 0.15 < time.monotonic() - t < 5
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(loadkit.HttpError, match="ConnectionRefused"):
        loadkit.KeepAliveClient(f"http://127.0.0.1:{port}").request("GET", "/")


def test_the_client_wants_an_http_url() -> None:
    with pytest.raises(ValueError, match="needs an http:// URL with a host, got 'https://x'"):
        loadkit.KeepAliveClient("https://x")


# --- recorder and percentiles -------------------------------------------------------------------


@given(st.floats(0, 5000, allow_nan=False))
def test_a_latency_falls_in_its_bucket(ms: float) -> None:
    lower = loadkit.bucket_us(ms)
    assert lower <= ms * 1000 < lower + loadkit.bucket_width_us(lower) + 1e-6


def test_percentiles_match_numpy_within_a_bucket() -> None:
    rng = np.random.default_rng(3)
    samples = rng.lognormal(1.5, 0.8, 20_000)
    hist: dict[int, int] = {}
    for x in samples:
        b = loadkit.bucket_us(float(x))
        hist[b] = hist.get(b, 0) + 1
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(samples, q, method="inverted_cdf"))
        got = loadkit.percentile_ms(hist, q)
        width = loadkit.bucket_width_us(loadkit.bucket_us(exact)) / 1000
        assert exact <= got <= exact + width + 1e-9
    assert math.isnan(loadkit.percentile_ms({}, 0.5))


def test_recorder_files_merge_across_processes(tmp_path: Path) -> None:
    a, b = loadkit.Recorder(), loadkit.Recorder()
    a.add("scan (QR token)", 100.2, 3.0, failed=False, expected_409=False)
    a.add("dispense", 100.7, 4.0, failed=False, expected_409=True)
    b.add("scan (QR token)", 100.9, 70.0, failed=True, expected_409=False)
    a.dump(tmp_path / "recorder-1.json.gz")
    b.dump(tmp_path / "recorder-2.json.gz")
    rows = loadkit.load_records(tmp_path)
    scans = [r for r in rows if r[0] == "scan (QR token)"]
    assert sum(r[2] for r in scans) == 2
    assert sum(r[3] for r in scans) == 1
    assert [r[4] for r in rows if r[0] == "dispense"] == [1]


# --- analysis: knee, gate, coordinated omission, CPU-bound load generator --------------------


def _rows(plan: loadkit.Plan, t0: float, per_stage: list[tuple[float, float, int]]) -> list[Any]:
    """Synthetic records: per stage (share of target achieved, latency ms, failures/s)."""
    rows = []
    for stage, (share, ms, fails) in zip(plan.stages, per_stage, strict=True):
        n = round(stage.target_rps["total"] * share)
        for sec in range(int(t0 + stage.start_s), int(t0 + stage.end_s)):
            rows.append(("scan (QR token)", sec, n, fails, 0, {loadkit.bucket_us(ms): n}))
    return rows


def _plan(tmp_path: Path) -> loadkit.Plan:
    return loadkit.make_plan(
        identities=tmp_path,
        pool=tmp_path,
        out=tmp_path,
        multiples=[1, 2, 5],
        first_ramp_s=5,
        first_hold_s=20,
        step_ramp_s=2,
        step_hold_s=10,
    )


def test_the_knee_is_the_last_step_within_the_slo_at_its_full_rate(tmp_path: Path) -> None:
    plan, t0 = _plan(tmp_path), 1_000_000.0
    cpu = [{"t": t0 + s, "server": 1.0, "locust": 0.5} for s in range(60)]
    rows = _rows(plan, t0, [(1.0, 5.0, 0), (1.0, 30.0, 0), (1.0, 80.0, 0)])
    results = load.analyse(rows, plan, t0, cpu, locust_cores=1)
    assert [r.passed for r in results] == [True, True, False]
    assert results[2].verdict() == "p99 > 50 ms"
    k = load.knee(results)
    assert k is not None
    assert k.stage.multiple == 2
    assert load.gate(results)[0]
    assert results[0].cpu == {"server": 1.0, "locust": 0.5}


def test_a_rate_that_was_not_offered_is_not_credited(tmp_path: Path) -> None:
    plan, t0 = _plan(tmp_path), 1_000_000.0
    cpu = [{"t": t0 + s, "server": 0.4, "locust": 0.97} for s in range(60)]
    rows = _rows(plan, t0, [(0.8, 5.0, 0), (1.0, 5.0, 0), (1.0, 5.0, 0)])
    results = load.analyse(rows, plan, t0, cpu, locust_cores=1)
    assert not results[0].sustained
    assert results[0].locust_bound
    assert results[0].verdict() == "rate not sustained, **locust CPU-bound**"
    assert load.knee(results) is None
    ok, why = load.gate(results)
    assert not ok
    assert "rate not sustained" in why


def test_failures_above_a_thousandth_fail_the_gate(tmp_path: Path) -> None:
    plan, t0 = _plan(tmp_path), 1_000_000.0
    rows = _rows(plan, t0, [(1.0, 5.0, 2), (1.0, 5.0, 0), (1.0, 5.0, 0)])
    results = load.analyse(rows, plan, t0, [], locust_cores=1)
    assert results[0].total.failure_ratio == pytest.approx(2 / round(1.05 * 1500), rel=0.02)
    assert not load.gate(results)[0]
