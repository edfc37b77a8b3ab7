"""The PostgreSQL backend against the embedded store: the same operations, the same answers.

A differential test: random sequences of creations, scans (right and wrong codes),
dispensations (partial, full, over, replayed and conflicting idempotency keys,
substitutions), cancellations, consent changes and reads, at times before and after expiry,
run against :class:`EmbeddedBackend` (the Rust store, an independent implementation of the
same contract) and :class:`PostgresBackend`; every answer must be the same bytes and every
refusal the same exception. Then what is PostgreSQL-specific: migrations applied once by
concurrent starters, node leases, the shared manual-entry lockout, the schema's layout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import orjson
import pytest
from ordonum import Conflict, IdGenerator, SigningKey, Store, issue_token
from ordonum.service.backend import Backend, EmbeddedBackend
from ordonum.service.pg import PostgresBackend, migrate
from ordonum.service.ratelimit import Lockout

from .conftest import cip13, finess, nir, rpps

pytestmark = pytest.mark.anyio

DAY = 86_400_000


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresBackend]:
    backend = await PostgresBackend.open(pg_url, min_size=1, max_size=4)
    yield backend
    await backend.close()


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedBackend]:
    backend = EmbeddedBackend(
        Store.memory(),
        ThreadPoolExecutor(4),
        Lockout(5, 60, 300),
        node=1,
    )
    yield backend
    await backend.close()


async def both(backends: list[Backend], op: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``op`` on every backend; assert the same answer or the same refusal."""
    results: list[tuple[str, Any]] = []
    for b in backends:
        try:
            results.append(("ok", await getattr(b, op)(*args, **kwargs)))
        except Exception as exc:  # the refusal itself is compared
            results.append((type(exc).__name__, str(exc)))
    first = results[0]
    for other in results[1:]:
        assert other[0] == first[0], (op, args, results)
        # The store's structural errors are serde's text ("unknown field `x`, expected one
        # of ... at line 1 column 189"): only the exception is compared for those.
        if " at line " not in str(first[1]):
            assert other == first, (op, args, results)
    return first


def _record(rng: random.Random, rx_id: str, code: str, now: int) -> dict[str, Any]:
    lines = []
    for _ in range(rng.randint(1, 3)):
        lines.append(
            {
                "label": rng.choice(["AMOXICILLINE 500 mg", 'Sirop "enfant"', "Paracétamol 1 g"]),
                "cip13": rng.choice([None, cip13()]),
                "dosage": rng.choice(["", "1 matin\n1 soir", "si douleur"]),
                "quantity": rng.randint(1, 4),
                "renewals": rng.choice([0, 0, 1, 2]),
                "substitutable": rng.random() < 0.7,
            }
        )
    return {
        "id": rx_id,
        "prescriber_rpps": rpps(),
        "patient": {"nir": nir(), "name": "Camille Martin", "birth_date": "1980-05-17"},
        "valid_until_ms": now + rng.choice([1, 10, 60]) * DAY,
        "lines": lines,
        "prescriber_may_view_dispensations": rng.random() < 0.5,
        "access_code": code,
    }


def _dispensation(rng: random.Random, n_lines: int, prescribed: list[Any]) -> dict[str, Any]:
    picked = rng.sample(range(n_lines + 1), k=rng.randint(1, min(2, n_lines + 1)))
    lines = []
    for line in picked:
        kind = rng.choice(["none", "none", "substitution", "adjustment"])
        given = prescribed[line]["cip13"] if line < n_lines else None
        lines.append(
            {
                "line": line,
                "quantity": rng.randint(1, 3),
                "cip13": cip13() if kind == "substitution" else rng.choice([given, None]),
                "intervention": {
                    "kind": kind,
                    "motif": "RUPTURE-1" if kind == "adjustment" else None,
                    "prescriber_agreed_at": rng.choice([None, "2026-01-02T03:04:05.678+01:00"]),
                },
            }
        )
    return {"pharmacy_finess": finess(), "pharmacist_rpps": rpps(), "lines": lines}


@pytest.mark.parametrize("seed", range(4))
async def test_same_answers_as_the_embedded_store(
    seed: int, pg: PostgresBackend, embedded: EmbeddedBackend
) -> None:
    rng = random.Random(seed)
    backends: list[Backend] = [embedded, pg]
    key = SigningKey.generate("DIF1")
    gen = IdGenerator(pg.node)
    t0 = int(time.time() * 1000) // 1000 * 1000
    rxs: list[tuple[str, str, dict[str, Any]]] = []
    sent: list[tuple[str, dict[str, Any], str]] = []
    seen: set[tuple[str, str]] = set()
    for step in range(160):
        now = t0 + step * 1000 + rng.choice([0, 0, 0, 15 * DAY])
        action = rng.random()
        if not rxs or action < 0.15:
            rx_id = gen.new()
            code = issue_token(key, rx_id).access_code
            record = _record(rng, rx_id, code, now)
            outcome = await both(backends, "create", record, "RX1:token", now_ms=now)
            if outcome[0] == "ok":
                rxs.append((rx_id, code, record))
            continue
        rx_id, code, record = rng.choice(rxs)
        if action < 0.25:
            wrong = rng.random() < 0.3
            use = issue_token(key, rx_id).access_code if wrong else code
            await both(backends, "scan", rx_id, use, actor=f"{finess()}/{rpps()}", now_ms=now)
        elif action < 0.7:
            if sent and rng.random() < 0.25:  # an idempotency key again
                rx_id, body, k = rng.choice(sent)
                code = next(c for r, c, _ in rxs if r == rx_id)
                if rng.random() < 0.3:
                    body = {**body, "pharmacist_rpps": rpps()}
            else:
                body = _dispensation(rng, len(record["lines"]), record["lines"])
                k = f"key-{rng.randint(0, 10**9)}"
                sent.append((rx_id, body, k))
            outcome = await both(
                backends, "dispense", rx_id, body, idempotency_key=k, access_code=code, now_ms=now
            )
            replayed = outcome[0] == "ok" and b'"replayed":true' in outcome[1]
            seen.add(("replayed" if replayed else outcome[0], str(outcome[1])[:40]))
        elif action < 0.75:
            who = record["prescriber_rpps"] if rng.random() < 0.8 else rpps()
            await both(backends, "cancel", rx_id, prescriber_rpps=who, now_ms=now)
        elif action < 0.8:
            await both(backends, "set_consent", rx_id, rng.random() < 0.5, now_ms=now)
        else:
            await both(backends, "get", rx_id, now_ms=now)
            await both(backends, "owner", rx_id)
            await both(backends, "dispensations", rx_id)
            await both(backends, "access_log", rx_id)
            nir_ = record["patient"]["nir"]
            await both(backends, "by_patient", nir_, limit=5)
    kinds = {kind for kind, _ in seen}
    # The sequence reached every kind of answer (else the comparison proves little).
    assert {"ok", "replayed", "Conflict", "InvalidRecord"} <= kinds, kinds
    assert any("over-dispensing" in m for k, m in seen if k == "Conflict"), seen
    ids = [r for r, _, _ in rxs]
    await both(backends, "get_many", [*ids, IdGenerator(4_194_303).new()], now_ms=t0)


async def test_refusals_match(pg: PostgresBackend, embedded: EmbeddedBackend) -> None:
    backends: list[Backend] = [embedded, pg]
    now = int(time.time() * 1000)
    rx_id = IdGenerator(pg.node).new()
    code = issue_token(SigningKey.generate("REF1"), rx_id).access_code
    good = _record(random.Random(1), rx_id, code, now)
    bad: list[dict[str, Any]] = [
        {**good, "id": "nope"},
        {**good, "prescriber_rpps": "123"},
        {**good, "patient": {**good["patient"], "nir": "12345"}},
        {**good, "patient": {**good["patient"], "name": ""}},
        {**good, "patient": {**good["patient"], "name": "a\tb"}},
        {**good, "patient": {**good["patient"], "birth_date": "1980-02-30"}},
        {**good, "lines": []},
        {**good, "valid_until_ms": now},
        {**good, "valid_until_ms": now + 400 * DAY},
        {**good, "access_code": "not a code"},
        {**good, "lines": [{**good["lines"][0], "quantity": 0}]},
        {**good, "lines": [{**good["lines"][0], "renewals": 12}]},
        {**good, "lines": [{**good["lines"][0], "cip13": "12"}]},
        {**good, "lines": [{**good["lines"][0], "label": "x" * 201}]},
    ]
    for record in bad:
        outcome = await both(backends, "create", record, "RX1:token", now_ms=now)
        assert outcome[0] == "InvalidRecord", outcome
    assert (await both(backends, "create", good, "RX1:token", now_ms=now))[0] == "ok"
    again = await both(backends, "create", good, "RX1:token", now_ms=now)
    assert again == ("Conflict", f"prescription {rx_id} already exists")
    missing = IdGenerator(4_194_303).new()
    for op, args, kwargs in [
        ("get", (missing,), {}),
        ("owner", (missing,), {}),
        ("dispensations", (missing,), {}),
        ("access_log", (missing,), {}),
        ("set_consent", (missing, True), {}),
        ("cancel", (missing,), {"prescriber_rpps": good["prescriber_rpps"]}),
        ("scan", (missing, code), {"actor": "a"}),
        ("scan", (rx_id, "0000"), {"actor": "a"}),
        ("scan", (rx_id, code), {"actor": ""}),
        ("get", ("nope",), {}),
        ("by_patient", ("123",), {}),
        ("by_patient", (good["patient"]["nir"],), {"limit": 10_001}),
    ]:
        outcome = await both(backends, op, *args, **kwargs)
        assert outcome[0] in {"NotFound", "InvalidRecord", "InvalidId"}, (op, outcome)
    body = {
        "pharmacy_finess": finess(),
        "pharmacist_rpps": rpps(),
        "lines": [
            {
                "line": 0,
                "quantity": 1,
                "cip13": None,
                "intervention": {"kind": "none", "motif": None, "prescriber_agreed_at": None},
            }
        ],
    }
    for key, changed in [
        ("", body),
        ("has space", body),
        ("k", {**body, "pharmacy_finess": "1"}),
        ("k", {**body, "lines": []}),
        ("k", {**body, "extra": 1}),
        ("k", {**body, "lines": [{**body["lines"][0], "quantity": 0}]}),
        ("k", {**body, "lines": [body["lines"][0], body["lines"][0]]}),
        (
            "k",
            {
                **body,
                "lines": [
                    {**body["lines"][0], "intervention": {"kind": "adjustment", "motif": None}}
                ],
            },
        ),
        (
            "k",
            {
                **body,
                "lines": [{**body["lines"][0], "intervention": {"kind": "none", "motif": "X"}}],
            },
        ),
        ("k", {**body, "lines": [{**body["lines"][0], "intervention": {"kind": "substitution"}}]}),
    ]:
        outcome = await both(
            backends, "dispense", rx_id, changed, idempotency_key=key, access_code=code
        )
        assert outcome[0] == "InvalidRecord", (key, changed, outcome)


async def test_concurrent_dispensations_never_over_dispense(pg_url: str) -> None:
    """Many connections race for the last units of one prescription, through several pools
    (as several processes would): exactly the allowance is granted, the rest is refused."""
    pools = [await PostgresBackend.open(pg_url, min_size=1, max_size=8) for _ in range(3)]
    try:
        rx_id = IdGenerator(pools[0].node).new()
        code = issue_token(SigningKey.generate("RAC1"), rx_id).access_code
        now = int(time.time() * 1000)
        record = _record(random.Random(7), rx_id, code, now)
        record["lines"] = [{**record["lines"][0], "quantity": 5, "renewals": 0}]
        await pools[0].create(record, "RX1:t", now_ms=now)

        async def one(i: int) -> int:
            body = {
                "pharmacy_finess": finess(),
                "pharmacist_rpps": rpps(),
                "lines": [
                    {
                        "line": 0,
                        "quantity": 1 + i % 2,
                        "cip13": None,
                        "intervention": {"kind": "none"},
                    }
                ],
            }
            try:
                await pools[i % 3].dispense(rx_id, body, idempotency_key=f"r{i}", access_code=code)
            except Conflict:
                return 0
            return 1 + i % 2

        granted = await asyncio.gather(*(one(i) for i in range(40)))
        assert sum(granted) == 5
        doc = await pools[1].get(rx_id)
        assert b'"remaining":0' in doc
        assert b'"status":"dispensed"' in doc
    finally:
        for p in pools:
            await p.close()


async def test_twin_requests_race_to_one_dispensation(pg_url: str) -> None:
    """The same request (same idempotency key) sent many times at once, through several
    pools: one dispensation is recorded, every answer names it, all but one are replays.
    (A request that waited for the row lock must see what its twin committed meanwhile.)"""
    pools = [await PostgresBackend.open(pg_url, min_size=1, max_size=8) for _ in range(3)]
    try:
        rx_id = IdGenerator(pools[0].node).new()
        code = issue_token(SigningKey.generate("TWN1"), rx_id).access_code
        now = int(time.time() * 1000)
        record = _record(random.Random(8), rx_id, code, now)
        record["lines"] = [{**record["lines"][0], "quantity": 50, "renewals": 0}]
        await pools[0].create(record, "RX1:t", now_ms=now)
        body = {
            "pharmacy_finess": finess(),
            "pharmacist_rpps": rpps(),
            "lines": [{"line": 0, "quantity": 2, "intervention": {"kind": "none"}}],
        }
        for round_ in range(5):
            answers = await asyncio.gather(
                *(
                    pools[i % 3].dispense(
                        rx_id, body, idempotency_key=f"twin-{round_}", access_code=code
                    )
                    for i in range(12)
                )
            )
            docs = [orjson.loads(a) for a in answers]
            assert {d["dispensation_id"] for d in docs} == {f"{rx_id}/{round_ + 1}"}
            assert sorted(d["replayed"] for d in docs) == [False] + [True] * 11
        doc = orjson.loads(await pools[1].get(rx_id))
        assert doc["lines"][0]["remaining"] == 50 - 2 * 5
        assert len(doc["dispensations"]) == 5
    finally:
        for p in pools:
            await p.close()


async def test_migrations_once_and_nodes_unique(pg_cluster: Any) -> None:
    url = pg_cluster.create_database(f"mig_{int(time.time() * 1e6)}")
    backends = await asyncio.gather(
        *(PostgresBackend.open(url, min_size=1, max_size=1) for _ in range(5))
    )
    try:
        nodes = {b.node for b in backends}
        assert len(nodes) == 5
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations")
            assert [(r["version"], r["name"]) for r in rows] == [(1, "001_initial.sql")]
            assert await migrate(conn) == []
            parts = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'prescriptions'::regclass"
            )
            assert parts == 16
        finally:
            await conn.close()
        # Scans commit their access-log entry without waiting for it (like the embedded
        # store's scan); every other write waits.
        assert await backends[0].read_pool.fetchval("SHOW synchronous_commit") == "off"
        assert await backends[0].pool.fetchval("SHOW synchronous_commit") == "on"
    finally:
        for b in backends:
            await b.close()


async def test_lockout_is_shared_between_processes(pg_url: str) -> None:
    a = await PostgresBackend.open(pg_url, min_size=1, max_size=2, lockout_failures=3)
    b = await PostgresBackend.open(pg_url, min_size=1, max_size=2, lockout_failures=3)
    try:
        key = IdGenerator(a.node).new()
        await a.lockout_failed(key)
        await b.lockout_failed(key)
        assert await a.lockout_retry_after(key) == 0
        await b.lockout_succeeded(key)  # a success forgets the failures
        for backend in (a, b, a):
            await backend.lockout_failed(key)
        assert 295 <= await b.lockout_retry_after(key) <= 300
        assert await a.lockout_retry_after(IdGenerator(a.node).new()) == 0
        # Every 1000th failure forgets the IDs neither locked nor recently failed.
        stale = IdGenerator(a.node).new()
        await a.pool.execute(
            "INSERT INTO manual_lockouts (id_key, failures) VALUES ($1, ARRAY[1::bigint])", stale
        )
        a._failures_seen = 999
        await a.lockout_failed(IdGenerator(a.node).new())
        keys = {r["id_key"] for r in await a.pool.fetch("SELECT id_key FROM manual_lockouts")}
        assert stale not in keys
        assert key in keys  # still locked
    finally:
        await a.close()
        await b.close()


async def test_pool_reset_rolls_back_what_a_cancelled_request_left(pg_url: str) -> None:
    backend = await PostgresBackend.open(pg_url, min_size=1, max_size=1)
    try:
        async with backend.pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SELECT 1")
            assert conn.is_in_transaction()
        async with backend.pool.acquire() as conn:  # the one connection, back from the pool
            assert not conn.is_in_transaction()  # from the server's ReadyForQuery status
    finally:
        await backend.close()
