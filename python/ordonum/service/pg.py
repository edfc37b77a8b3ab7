"""PostgreSQL as the system of record: the backend behind ``ordonum serve --store postgresql://``.

Several service processes, on one machine or many, share one state: every answer comes
from PostgreSQL, nothing mutable is cached in a process. The schema and its migrations are
``service/migrations/NNN_*.sql``, applied at start-up under an advisory lock (so that N
workers starting together apply them once) and recorded in ``schema_migrations``.

Driver: asyncpg (binary protocol, prepared statements cached per connection, its own pool).

How each operation stays correct with many processes:

* **dispense**: one transaction. ``SELECT ... FOR UPDATE`` takes the prescription's row lock
  (only if the access code's digest matches: a wrong code locks nothing); then, in a
  statement of its own (so that it sees what a twin request committed while this one
  waited for the lock), the dispensation already recorded under the same idempotency key,
  if any; the request is checked against the locked state in Python (the store's rules,
  :mod:`pgmodel`); the new remaining quantities and the dispensation row are written by
  one statement; COMMIT. The answer is sent only after COMMIT returned, and with
  ``synchronous_commit = on`` (the default; with a synchronous standby it waits for the
  standby too) a committed dispensation survives a crash. Two pharmacies racing for the
  last units queue on the row lock: the second sees the first's result. ``remaining >= 0``
  is also a CHECK constraint, a second line of defence.
* **scan**: one statement: the code check, the access-log insert and the document read, on
  a second pool whose sessions have ``synchronous_commit = off`` (the read pool: reads and
  the lockout bookkeeping use it too, so that they never queue behind dispensations waiting
  for WAL flushes): like the embedded store's scan, it does not wait for the log entry to
  be durable (a crash or a failover may
  lose the entries of the last few hundred milliseconds; any durable write committed after
  a scan makes it durable too, the WAL being one sequence).
* **create**: the prescription and its QR token text in one transaction.
* A lost connection, a failover or any other database error that is not about the request
  raises :class:`~ordonum.StoreFailed` (503): the write may or may not have committed, like
  an answer lost on the network; retrying with the same idempotency key is safe.

IDs: each process leases a fresh generator node from the ``id_nodes`` sequence at start-up
(:meth:`PostgresBackend.lease_node`), so processes never make the same ID.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import time
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson

from ordonum import Conflict, NotFound, StoreFailed, parse_id
from ordonum.service import pgmodel
from ordonum.service.durable import DONE, Durability
from ordonum.service.pgmodel import invalid

__all__ = ["NO_MATCH", "PostgresBackend", "migrate"]

NO_MATCH = "no prescription with this ID and access code"
MAX_BY_PATIENT = 10_000
MIGRATIONS_LOCK = 0x6F72646F6E756D  # "ordonum": the advisory lock taken while migrating

P = ParamSpec("P")
T = TypeVar("T")


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


def _canonical(rx_id: str) -> str:
    """Canonical ID text (raises InvalidId, like the store, for a malformed one)."""
    return parse_id(rx_id).text


def _failed(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Database and connection errors become StoreFailed (503); domain errors pass."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if isinstance(exc, StoreFailed):
                raise
            raise StoreFailed(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc

    return wrapper


async def _reset(conn: asyncpg.Connection) -> None:
    """What a connection needs when it goes back to the pool. asyncpg's default sends
    ``RESET ALL`` and friends, one more round trip per query; this backend leaves no session
    state behind (no SET, LISTEN, cursors or held advisory locks), so only an unfinished
    transaction, which a cancelled request could leave, is rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of the packaged migrations, in order."""
    out = []
    for entry in resources.files("ordonum.service.migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            out.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction, under an
    advisory lock; returns the names applied."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK)
    return applied


_DISPENSATIONS = (
    "(SELECT coalesce(json_agg(json_build_array(d.n, d.at_ms, d.pharmacy_finess,"
    " d.pharmacist_rpps, d.lines) ORDER BY d.n), '[]')"
    " FROM dispensations d WHERE d.rx_id = p.id)"
)
_DOC_COLUMNS = (
    "p.id, p.created_at_ms, p.valid_until_ms, p.prescriber_rpps, p.patient_nir,"
    " p.patient_name, p.birth_date, p.lines, p.remaining, p.dispensation_count,"
    " p.cancelled_at_ms, p.consent"
)
SQL_GET = f"SELECT {_DOC_COLUMNS}, {_DISPENSATIONS} AS disp FROM prescriptions p WHERE p.id = $1"
SQL_GET_MANY = (
    f"SELECT {_DOC_COLUMNS}, {_DISPENSATIONS} AS disp FROM prescriptions p WHERE p.id = ANY($1)"
)
SQL_SCAN = (
    "WITH hit AS (SELECT * FROM prescriptions WHERE id = $1 AND code_digest = $2),"
    " logged AS (INSERT INTO access_log (rx_id, at_ms, actor) SELECT id, $3, $4 FROM hit)"
    f" SELECT {_DOC_COLUMNS}, {_DISPENSATIONS} AS disp FROM hit p"
)
SQL_LOCK_FOR_DISPENSE = (
    "SELECT valid_until_ms, cancelled_at_ms, remaining, dispensation_count, lines"
    " FROM prescriptions WHERE id = $1 AND code_digest = $2 FOR UPDATE"
)
# A statement of its own, run once the row lock is held: in READ COMMITTED each statement
# sees what was committed before it started, so a request that waited for the lock sees
# the dispensation its twin (same key) just committed. Joined into the locking SELECT it
# would not: after a lock wait PostgreSQL re-reads the locked row only, not the join.
SQL_SAME_KEY = (
    "SELECT n, pharmacy_finess, pharmacist_rpps, lines, remaining_after FROM dispensations"
    " WHERE rx_id = $1 AND idempotency_key = $2"
)
SQL_RECORD_DISPENSATION = (
    "WITH u AS (UPDATE prescriptions SET remaining = $2, dispensation_count = $3"
    " WHERE id = $1)"
    " INSERT INTO dispensations (rx_id, n, idempotency_key, at_ms, pharmacy_finess,"
    " pharmacist_rpps, lines, remaining_after) VALUES ($1, $3, $4, $5, $6, $7, $8, $2)"
)
SQL_CREATE = (
    "WITH t AS (INSERT INTO qr_tokens (rx_id, token) VALUES ($1, $13) ON CONFLICT DO NOTHING)"
    f" INSERT INTO prescriptions ({', '.join(pgmodel.Prescription.COLUMNS)})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    " ON CONFLICT DO NOTHING RETURNING $12::int"
)
SQL_LOCKOUT_FAILED = (
    "INSERT INTO manual_lockouts AS m (id_key, failures) VALUES ($1, ARRAY[$2::bigint])"
    " ON CONFLICT (id_key) DO UPDATE SET"
    " failures = CASE WHEN cardinality(ARRAY(SELECT f FROM unnest(m.failures || $2::bigint) f"
    "   WHERE f > $2 - $3)) >= $4 THEN '{}'::bigint[]"
    "   ELSE ARRAY(SELECT f FROM unnest(m.failures || $2::bigint) f WHERE f > $2 - $3) END,"
    " locked_until = CASE WHEN cardinality(ARRAY(SELECT f FROM unnest(m.failures ||"
    "   $2::bigint) f WHERE f > $2 - $3)) >= $4 THEN $2 + $5 ELSE m.locked_until END"
)


def _dispensation_docs(rx_id: str, raw: str) -> list[dict[str, Any]]:
    return [
        pgmodel.dispensation_doc(rx_id, n, at, finess, rpps, lines)
        for n, at, finess, rpps, lines in orjson.loads(raw)
    ]


def _row_document(row: Any, now: int) -> bytes:
    rx_id = row["id"]
    disp = _dispensation_docs(rx_id, row["disp"]) if row["dispensation_count"] else []
    return pgmodel.document(rx_id, row, disp, now)


class PostgresBackend:
    """The :class:`~ordonum.service.backend.Backend` on PostgreSQL. Open with :meth:`open`."""

    kind = "postgresql"

    def __init__(
        self,
        pool: asyncpg.Pool,
        read_pool: asyncpg.Pool,
        node: int,
        *,
        lockout_failures: int = 5,
        lockout_window: float = 60.0,
        lockout_seconds: float = 300.0,
    ) -> None:
        self.pool = pool
        self.read_pool = read_pool
        self.node = node
        self._lockout = (lockout_failures, int(lockout_window * 1000), int(lockout_seconds * 1000))
        self.counters = {"dispensations": 0, "conflicts": 0, "replays": 0}
        self._failures_seen = 0

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        lockout_failures: int = 5,
        lockout_window: float = 60.0,
        lockout_seconds: float = 300.0,
    ) -> PostgresBackend:
        """Connect a pool to ``url``, apply pending migrations, lease an ID node."""
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, command_timeout=60, reset=_reset
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreFailed(f"PostgreSQL: cannot connect: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                node = await cls.lease_node(conn)
            read_pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=max_size,
                command_timeout=60,
                reset=_reset,
                server_settings={"synchronous_commit": "off"},
            )
        except BaseException:
            await pool.close()
            raise
        return cls(
            pool,
            read_pool,
            node,
            lockout_failures=lockout_failures,
            lockout_window=lockout_window,
            lockout_seconds=lockout_seconds,
        )

    @staticmethod
    async def lease_node(conn: asyncpg.Connection) -> int:
        """A generator node number no other process was ever given (from a sequence)."""
        node: int = await conn.fetchval(
            "INSERT INTO node_leases (node, host, pid) VALUES (nextval('id_nodes'), $1, $2)"
            " RETURNING node",
            socket.gethostname(),
            os.getpid(),
        )
        return node

    async def close(self) -> None:
        await self.read_pool.close()
        await self.pool.close()

    # -- writes ----------------------------------------------------------------------------

    @_failed
    async def create(self, record: dict[str, Any], token: str, *, now_ms: int) -> bytes:
        rx = pgmodel.parse_record(record, now_ms)
        values = rx.row()
        async with self.pool.acquire() as conn, conn.transaction():
            ok = await conn.fetchval(SQL_CREATE, *values, 1, token)
            if ok is None:
                raise Conflict(f"prescription {rx.id} already exists")
        # The document from what was just inserted: no second round trip.
        row = dict(zip(pgmodel.Prescription.COLUMNS, values, strict=True))
        row |= {"dispensation_count": 0, "cancelled_at_ms": None}
        return pgmodel.document(rx.id, row, [], now_ms)

    async def create_start(self, record: dict[str, Any], token: str, *, now_ms: int) -> Durability:
        await self.create(record, token, now_ms=now_ms)  # committed: durable
        return DONE

    @_failed
    async def scan(
        self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None
    ) -> bytes:
        now = _now(now_ms)
        pgmodel._text("actor", actor, 1, pgmodel.MAX_KEY, False)
        rx_id = _canonical(rx_id)
        digest = pgmodel.access_digest(access_code) or b"\xa5" * 32
        row = await self.read_pool.fetchrow(SQL_SCAN, rx_id, digest, now, actor)
        if row is None:
            raise NotFound(NO_MATCH)
        return _row_document(row, now)

    async def dispense_start(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> tuple[bytes, Durability]:
        answer = await self.dispense(
            rx_id, record, idempotency_key=idempotency_key, access_code=access_code, now_ms=now_ms
        )
        return answer, DONE  # committed: durable

    @_failed
    async def dispense(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> bytes:
        now = _now(now_ms)
        rx_id = _canonical(rx_id)
        finess, rpps, lines = pgmodel.parse_dispensation(record, idempotency_key)
        digest = pgmodel.access_digest(access_code)
        if digest is None:
            raise NotFound(NO_MATCH)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(SQL_LOCK_FOR_DISPENSE, rx_id, digest)
            if row is None:
                raise NotFound(NO_MATCH)
            first = await conn.fetchrow(SQL_SAME_KEY, rx_id, idempotency_key)
            if first is not None:  # the key was seen: same request -> first answer
                same = (
                    first["pharmacy_finess"] == finess
                    and first["pharmacist_rpps"] == rpps
                    and orjson.loads(first["lines"]) == lines
                )
                if not same:
                    self.counters["conflicts"] += 1
                    raise Conflict(
                        f"idempotency key {orjson.dumps(idempotency_key).decode()} was already"
                        " used for a different dispensation"
                    )
                self.counters["replays"] += 1
                return pgmodel.dispense_answer(
                    rx_id, first["n"], list(first["remaining_after"]), True
                )
            remaining = self._check(rx_id, row, lines, now)
            n = row["dispensation_count"] + 1
            await conn.execute(
                SQL_RECORD_DISPENSATION,
                rx_id,
                remaining,
                n,
                idempotency_key,
                now,
                finess,
                rpps,
                orjson.dumps(lines).decode(),
            )
        # Acknowledged only now: the COMMIT above returned.
        self.counters["dispensations"] += 1
        return pgmodel.dispense_answer(rx_id, n, remaining, False)

    def _check(self, rx_id: str, row: Any, lines: list[dict[str, Any]], now: int) -> list[int]:
        """The store's ``check_dispensation``: remaining per line after it, or an error."""
        prescribed: list[dict[str, Any]] = orjson.loads(row["lines"])
        remaining: list[int] = list(row["remaining"])
        st = pgmodel.status(
            row["cancelled_at_ms"] is not None,
            prescribed,
            remaining,
            row["dispensation_count"],
            row["valid_until_ms"],
            now,
        )
        if st != "active" and st != "partially_dispensed":
            self.counters["conflicts"] += 1
            if st == "cancelled":
                raise Conflict(f"prescription {rx_id} is cancelled")
            if st == "dispensed":
                raise Conflict(f"prescription {rx_id} is already fully dispensed")
            raise Conflict(
                f"prescription {rx_id} expired at {pgmodel.rfc3339(row['valid_until_ms'])}"
            )
        for i, line in enumerate(lines):
            n = line["line"]
            if n >= len(prescribed):
                raise invalid(
                    f"lines[{i}].line",
                    f"the prescription has {len(prescribed)} lines, numbered from 0, got line {n}",
                )
            pl = prescribed[n]
            kind = line["intervention"]["kind"]
            if kind == "substitution" and not pl["substitutable"]:
                self.counters["conflicts"] += 1
                raise Conflict(f"line {n} is not substitutable")
            if (
                kind == "none"
                and line["cip13"] is not None
                and pl["cip13"] is not None
                and line["cip13"] != pl["cip13"]
            ):
                raise invalid(
                    f"lines[{i}].intervention.kind",
                    "the delivered cip13 differs from the prescribed one: a substitution or an"
                    " adjustment must be recorded",
                )
            if line["quantity"] > remaining[n]:
                self.counters["conflicts"] += 1
                raise Conflict(
                    f"over-dispensing: line {n} has {remaining[n]} units remaining,"
                    f" {line['quantity']} requested"
                )
            remaining[n] -= line["quantity"]
        return remaining

    @_failed
    async def cancel(self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None) -> str:
        now = _now(now_ms)
        rx_id = _canonical(rx_id)
        rpps = pgmodel._digits("prescriber_rpps", prescriber_rpps, 11)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT prescriber_rpps, cancelled_at_ms, remaining, dispensation_count,"
                " valid_until_ms FROM prescriptions WHERE id = $1 FOR UPDATE",
                rx_id,
            )
            if row is None:
                raise NotFound(f"no prescription {rx_id}")
            if row["prescriber_rpps"] != rpps:
                raise Conflict(f"prescription {rx_id} was issued by another prescriber")
            st = pgmodel.status(
                row["cancelled_at_ms"] is not None,
                [],
                list(row["remaining"]),
                row["dispensation_count"],
                row["valid_until_ms"],
                now,
            )
            if st == "cancelled":
                return "cancelled"
            if st == "dispensed":
                raise Conflict(
                    f"prescription {rx_id} is fully dispensed and can no longer be cancelled"
                )
            await conn.execute(
                "UPDATE prescriptions SET cancelled_at_ms = $2 WHERE id = $1", rx_id, now
            )
        return "cancelled"

    @_failed
    async def set_consent(self, rx_id: str, allowed: bool, *, now_ms: int | None = None) -> None:
        rx_id = _canonical(rx_id)
        found = await self.pool.fetchval(
            "UPDATE prescriptions SET consent = $2 WHERE id = $1 RETURNING true", rx_id, allowed
        )
        if found is None:
            raise NotFound(f"no prescription {rx_id}")

    # -- reads -----------------------------------------------------------------------------

    @_failed
    async def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes:
        now = _now(now_ms)
        rx_id = _canonical(rx_id)
        row = await self.read_pool.fetchrow(SQL_GET, rx_id)
        if row is None:
            raise NotFound(f"no prescription {rx_id}")
        return _row_document(row, now)

    @_failed
    async def get_many(self, rx_ids: list[str], *, now_ms: int | None = None) -> list[bytes | None]:
        now = _now(now_ms)
        ids = [_canonical(x) for x in rx_ids]
        rows = {r["id"]: r for r in await self.read_pool.fetch(SQL_GET_MANY, ids)}
        return [_row_document(rows[x], now) if x in rows else None for x in ids]

    @_failed
    async def owner(self, rx_id: str) -> tuple[str, str, bool]:
        rx_id = _canonical(rx_id)
        row = await self.read_pool.fetchrow(
            "SELECT prescriber_rpps, patient_nir, consent FROM prescriptions WHERE id = $1", rx_id
        )
        if row is None:
            raise NotFound(f"no prescription {rx_id}")
        return row["prescriber_rpps"], row["patient_nir"], row["consent"]

    @_failed
    async def dispensations(self, rx_id: str) -> bytes:
        rx_id = _canonical(rx_id)
        raw = await self.read_pool.fetchval(
            f"SELECT {_DISPENSATIONS} FROM prescriptions p WHERE p.id = $1", rx_id
        )
        if raw is None:
            raise NotFound(f"no prescription {rx_id}")
        return orjson.dumps({"dispensations": _dispensation_docs(rx_id, raw)})

    @_failed
    async def access_log(self, rx_id: str) -> bytes:
        rx_id = _canonical(rx_id)
        raw = await self.read_pool.fetchval(
            "SELECT (SELECT coalesce(json_agg(json_build_array(a.at_ms, a.actor) ORDER BY a.seq),"
            " '[]') FROM access_log a WHERE a.rx_id = p.id) FROM prescriptions p WHERE p.id = $1",
            rx_id,
        )
        if raw is None:
            raise NotFound(f"no prescription {rx_id}")
        entries = [
            {"at": pgmodel.rfc3339(at), "actor": actor, "action": "scan"}
            for at, actor in orjson.loads(raw)
        ]
        return orjson.dumps({"access_log": entries})

    @_failed
    async def by_patient(
        self, nir: str, *, limit: int = 50, before: str | None = None
    ) -> list[str]:
        key = pgmodel._nir("nir", nir)
        if limit > MAX_BY_PATIENT:
            raise invalid("limit", f"at most {MAX_BY_PATIENT}, got {limit}")
        cursor = None if before is None else _canonical(before)
        rows = await self.read_pool.fetch(
            "SELECT id FROM prescriptions WHERE patient_nir = $1"
            " AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            key,
            cursor,
            limit,
        )
        return [r["id"] for r in rows]

    @_failed
    async def token(self, rx_id: str) -> str | None:
        token: str | None = await self.read_pool.fetchval(
            "SELECT token FROM qr_tokens WHERE rx_id = $1", rx_id
        )
        return token

    @_failed
    async def count(self) -> int:
        """Prescriptions, estimated from the planner's statistics (an exact count scans)."""
        n = await self.read_pool.fetchval(
            "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'prescriptions'::regclass"
        )
        return int(n)

    def stats(self) -> dict[str, int]:
        return {
            "pool_size": self.pool.get_size(),
            "pool_idle": self.pool.get_idle_size(),
            "read_pool_size": self.read_pool.get_size(),
            "read_pool_idle": self.read_pool.get_idle_size(),
            "node": self.node,
            **self.counters,
        }

    # -- manual entry lockout, shared by every process -------------------------------------
    # On the read pool (synchronous_commit off): a crash may forget the last failures,
    # which costs an attacker's guesses nothing worth having, and these calls sit on the
    # manual scan path.

    @_failed
    async def lockout_retry_after(self, key: str) -> int:
        until = await self.read_pool.fetchval(
            "SELECT locked_until FROM manual_lockouts WHERE id_key = $1", key
        )
        left = (until or 0) - _now(None)
        return 0 if left <= 0 else max(1, math.ceil(left / 1000))

    @_failed
    async def lockout_failed(self, key: str) -> None:
        failures, window, seconds = self._lockout
        now = _now(None)
        await self.read_pool.execute(SQL_LOCKOUT_FAILED, key, now, window, failures, seconds)
        self._failures_seen += 1
        if self._failures_seen % 1000 == 0:  # forget IDs neither locked nor recently failed
            await self.read_pool.execute(
                "DELETE FROM manual_lockouts WHERE locked_until < $1 AND coalesce("
                "failures[cardinality(failures)], 0) < $1 - $2",
                now,
                window,
            )

    @_failed
    async def lockout_succeeded(self, key: str) -> None:
        await self.read_pool.execute(
            "UPDATE manual_lockouts SET failures = '{}' WHERE id_key = $1 AND failures <> '{}'",
            key,
        )
