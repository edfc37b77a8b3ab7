"""``ordonum demo --count N``: load N synthetic, valid prescriptions straight into the store.

Synthetic people (valid RPPS and NIR, check keys computed here), real medicines: each line is
a real pack from :mod:`ordonum.medicines` (CIP13, name, presentation). Fast on purpose (the
load test wants a million prescriptions in well under a minute), and each step measured
before it was changed: IDs reserved in batches; tokens signed in one call per batch
(``issue_tokens``: GIL released, several threads); records built as JSON text from fragments
drawn once (a pool of patients and a pool of prescription lines; per record, two
``getrandbits`` calls pick everything); records written with ``Store.create_many`` (one
call and one journal group commit per batch, GIL released) by a worker thread while this
thread builds the next batch; the store opened with ``sync="delay"`` (bulk data: a crash
loses at most the last few ms, then a checkpoint makes everything durable before the
command returns); each record carries its QR token text (``qr_token``).

With ``ORDONUM_STORE=postgresql://...`` (or ``ordonum demo --store URL``) the batches go to
PostgreSQL instead, with ``COPY`` (one transaction per batch, after the same validation as
the PostgreSQL backend's create), the IDs from a node leased like a service process's.

``--tokens FILE`` writes one TSV row per prescription (``id``, ``token``, ``access_code``,
``prescriber_rpps``, ``patient_nir``): what a load test needs to scan and to mint bearer
tokens for the right people.
"""

from __future__ import annotations

import random
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import orjson

from ordonum import IdGenerator, Store, Token, issue_tokens
from ordonum.service.keys import ensure_keys, load_qr_keys
from ordonum.service.settings import Settings

__all__ = ["load_demo", "synthetic_nir", "synthetic_rpps"]

DAY_MS = 86_400_000
BATCH = 10_000
LINE_POOL = 1 << 16  # distinct prescription lines drawn once (real packs)
# Line counts per prescription, indexed by 3 random bits.
LINE_COUNTS = (1, 1, 1, 2, 2, 2, 3, 4)
NAMES = (
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefebvre",
    "Leroy",
    "Roux",
    "David",
)
GIVEN = (
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Inès",
    "Jade",
    "Louise",
    "Lucas",
    "Hugo",
    "Louis",
    "Nathan",
    "Gabriel",
    "Jules",
    "Arthur",
    "Élise",
    "Noé",
)
DOSAGES = (
    "1 comprimé le matin",
    "1 comprimé matin et soir",
    "2 prises par jour pendant 7 jours",
    "1 application le soir",
    "selon douleur, 4 par jour au plus",
    "1 sachet par jour",
)


def _luhn_key(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def synthetic_rpps(rng: random.Random) -> str:
    body = f"1{rng.getrandbits(32) % 1_000_000_000:09d}"
    return body + _luhn_key(body)


def synthetic_nir(rng: random.Random) -> str:
    """Sex, year 30-99, month, department 01-95, commune and order 001-999, then the key."""
    r = rng.getrandbits(64)
    body = (
        f"{1 + r % 2}{30 + (r >> 1) % 70:02d}{1 + (r >> 8) % 12:02d}"
        f"{1 + (r >> 12) % 95:02d}{1 + (r >> 20) % 999:03d}{1 + (r >> 30) % 999:03d}"
    )
    return body + f"{97 - int(body) % 97:02d}"


def _medicines() -> list[tuple[str, str]]:
    """(cip13, label) of every marketed pack in the repository's medicines list."""
    from ordonum import medicines

    return [(m.cip13, f"{m.name} — {m.presentation}"[:200]) for m in medicines.load() if m.marketed]


def _patients(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """(NIR, the record's ``"patient":{...}`` member) for ``n`` synthetic patients."""
    out = []
    for _ in range(n):
        nir = synthetic_nir(rng)
        r = rng.getrandbits(16)
        name = f"{GIVEN[r % len(GIVEN)]} {NAMES[(r >> 4) % len(NAMES)]}"
        birth = f"19{nir[1:3]}-{nir[3:5]}-{1 + (r >> 8) % 28:02d}"
        quoted = orjson.dumps(name).decode()
        member = f'"patient":{{"nir":"{nir}","name":{quoted},"birth_date":"{birth}"}}'
        out.append((nir, member))
    return out


def _lines(rng: random.Random, packs: list[tuple[str, str]], n: int) -> list[tuple[str, bool]]:
    """(JSON object of a prescription line, renewable) for ``n`` random lines."""
    dosages = [orjson.dumps(d).decode() for d in DOSAGES]
    out = []
    for _ in range(n):
        cip13, label = packs[rng.getrandbits(32) % len(packs)]
        r = rng.getrandbits(16)
        quantity = (1, 1, 2, 3, 6)[r % 5]
        renewals = (0, 0, 0, 1, 2)[(r >> 3) % 5]
        substitutable = "false" if (r >> 6) % 10 == 0 else "true"
        line = (
            f'{{"label":{orjson.dumps(label).decode()},"cip13":"{cip13}",'
            f'"dosage":{dosages[(r >> 10) % len(dosages)]},"quantity":{quantity},'
            f'"renewals":{renewals},"substitutable":{substitutable}}}'
        )
        out.append((line, renewals > 0))
    return out


def _progress(done: int, total: int, start: float, out: IO[str]) -> None:
    width = 30
    filled = width * done // max(total, 1)
    rate = done / max(time.perf_counter() - start, 1e-9)
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} {rate:,.0f}/s")
    out.flush()


def load_demo(
    settings: Settings,
    count: int,
    *,
    tokens_out: Path | None = None,
    seed: int | None = None,
    progress: IO[str] | None = sys.stderr,
) -> int:
    """Create ``count`` prescriptions in ``settings.data_dir``; return how many were made."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(seed)
    packs = _medicines()
    ensure_keys(settings.keys_dir)
    key = load_qr_keys(settings.keys_dir).signing
    prescribers = [synthetic_rpps(rng) for _ in range(max(1, min(5_000, count // 20 + 1)))]
    patients = _patients(rng, max(1, count // 3))
    pool = _lines(rng, packs, min(LINE_POOL, max(64, 4 * count)))
    sink: _Sink = _PgSink(settings.store) if settings.is_postgresql else _EmbeddedSink(settings)
    ids = IdGenerator(sink.node)
    tsv = tokens_out.open("w", encoding="utf-8") if tokens_out else None
    if tsv:
        tsv.write("id\ttoken\taccess_code\tprescriber_rpps\tpatient_nir\n")
    start = time.perf_counter()
    done = 0
    # Three-stage pipeline: a signer signs batch k+1 (issue_tokens, GIL released) while
    # this thread builds batch k (Python) and a writer writes batch k-1 (create_many and the
    # file writes release the GIL).
    signer = ThreadPoolExecutor(1, thread_name_prefix="ordonum-demo-sign")
    writer = ThreadPoolExecutor(1, thread_name_prefix="ordonum-demo-write")
    pending: Future[None] | None = None

    def sign(n: int) -> tuple[list[str], list[Token]]:
        batch_ids = ids.new_batch(n)
        return batch_ids, issue_tokens(key, batch_ids)

    signing = signer.submit(sign, min(BATCH, count)) if count else None

    def write(
        records: list[str], now_ms: int, pairs: list[tuple[str, str]], rows: list[str]
    ) -> None:
        sink.write(records, now_ms, pairs)
        if tsv:
            tsv.writelines(rows)

    n_prescribers, n_patients, n_pool = len(prescribers), len(patients), len(pool)
    try:
        while done < count:
            n = min(BATCH, count - done)
            assert signing is not None
            batch_ids, tokens = signing.result()
            if done + n < count:
                signing = signer.submit(sign, min(BATCH, count - done - n))
            now = int(time.time() * 1000)
            # The store allows 3 months, 12 for a renewable prescription.
            short, long_ = now + 90 * DAY_MS, (now + 180 * DAY_MS, now + 365 * DAY_MS)
            records: list[str] = []
            pairs: list[tuple[str, str]] = []
            rows: list[str] = []
            getrandbits = rng.getrandbits
            for rx_id, token in zip(batch_ids, tokens, strict=True):
                r = getrandbits(64)
                picks = getrandbits(64)
                prescriber = prescribers[(r >> 3) % n_prescribers]
                nir, patient = patients[(r >> 16) % n_patients]
                chosen = [pool[(picks >> (16 * k)) % n_pool] for k in range(LINE_COUNTS[r & 7])]
                renewable = any(c[1] for c in chosen)
                valid_until = long_[(r >> 40) & 1] if renewable else short
                consent = "false" if (r >> 41) % 5 == 0 else "true"
                code = token.access_code
                records.append(
                    f'{{"id":"{rx_id}","prescriber_rpps":"{prescriber}",{patient},'
                    f'"valid_until_ms":{valid_until},"lines":[{",".join(c[0] for c in chosen)}],'
                    f'"prescriber_may_view_dispensations":{consent},"access_code":"{code}"}}'
                )
                text = token.text
                pairs.append((rx_id, text))
                if tsv:
                    rows.append(f"{rx_id}\t{text}\t{code}\t{prescriber}\t{nir}\n")
            if pending is not None:
                pending.result()
            pending = writer.submit(write, records, now, pairs, rows)
            done += n
            if progress:
                _progress(done, count, start, progress)
        if pending is not None:
            pending.result()
        writer.submit(sink.finish).result()
    finally:
        signer.shutdown(wait=True)
        writer.shutdown(wait=True)
        if tsv:
            tsv.close()
        sink.close()
    if progress:
        elapsed = time.perf_counter() - start
        progress.write(f"\n{done:,} prescriptions loaded in {elapsed:.1f} s\n")
    return done


class _Sink:
    """Where the demo's batches go; ``write`` and ``finish`` run on the writer thread."""

    node: int

    def write(self, records: list[str], now_ms: int, pairs: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _EmbeddedSink(_Sink):
    def __init__(self, settings: Settings) -> None:
        settings.store_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(settings.store_dir, sync="delay")
        self.node = settings.node

    def write(self, records: list[str], now_ms: int, pairs: list[tuple[str, str]]) -> None:
        # each record with its QR token text (records are JSON objects: '}' ends them)
        with_tokens = [
            f'{record[:-1]},"qr_token":{orjson.dumps(token).decode()}}}'
            for record, (_, token) in zip(records, pairs, strict=True)
        ]
        self.store.create_many(with_tokens, now_ms=now_ms)

    def finish(self) -> None:
        self.store.checkpoint()

    def close(self) -> None:
        self.store.close()


class _PgSink(_Sink):
    """COPY into PostgreSQL from an event loop owned by the writer thread."""

    def __init__(self, url: str) -> None:
        import asyncio

        import asyncpg

        from ordonum.service.pg import PostgresBackend, migrate

        self.loop = asyncio.new_event_loop()

        async def connect() -> tuple[Any, int]:
            conn = await asyncpg.connect(url)
            await migrate(conn)
            return conn, await PostgresBackend.lease_node(conn)

        self.conn, self.node = self.loop.run_until_complete(connect())

    def write(self, records: list[str], now_ms: int, pairs: list[tuple[str, str]]) -> None:
        from ordonum.service import pgmodel

        rows = [pgmodel.parse_record(orjson.loads(record), now_ms).row() for record in records]

        async def copy() -> None:
            async with self.conn.transaction():
                await self.conn.copy_records_to_table(
                    "prescriptions", records=rows, columns=pgmodel.Prescription.COLUMNS
                )
                await self.conn.copy_records_to_table(
                    "qr_tokens", records=pairs, columns=("rx_id", "token")
                )

        self.loop.run_until_complete(copy())

    def finish(self) -> None:
        self.loop.run_until_complete(self.conn.execute("ANALYZE"))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()
