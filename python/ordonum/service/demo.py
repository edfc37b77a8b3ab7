"""``ordonum demo --count N``: load N synthetic, valid prescriptions straight into the store.

Synthetic people (valid RPPS and NIR, check keys computed here), real medicines: each line is
a real pack from :mod:`ordonum.medicines` (CIP13, name, presentation). Fast on purpose (the
load test wants a million prescriptions in well under a minute): IDs reserved in batches,
records written through the store directly (no HTTP), the store opened with
``sync="delay"`` (bulk data: a crash loses at most the last few ms, then a checkpoint makes
everything durable before the command returns), the QR tokens kept in the vault in one
transaction per batch.

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

from ordonum import IdGenerator, Store, issue_token
from ordonum.service.keys import ensure_keys, load_qr_keys
from ordonum.service.settings import Settings
from ordonum.service.vault import TokenVault

__all__ = ["load_demo", "synthetic_nir", "synthetic_rpps"]

DAY_MS = 86_400_000
BATCH = 5_000
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
    body = "1" + "".join(rng.choice("0123456789") for _ in range(9))
    return body + _luhn_key(body)


def synthetic_nir(rng: random.Random) -> str:
    body = (
        f"{rng.choice('12')}{rng.randint(30, 99):02d}{rng.randint(1, 12):02d}"
        f"{rng.randint(1, 95):02d}{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
    )
    return body + f"{97 - int(body) % 97:02d}"


def _medicines() -> list[tuple[str, str]]:
    """(cip13, label) of every marketed pack in the repository's medicines list."""
    from ordonum import medicines

    return [(m.cip13, f"{m.name} — {m.presentation}"[:200]) for m in medicines.load() if m.marketed]


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
    patients = [synthetic_nir(rng) for _ in range(max(1, count // 3))]
    sink: _Sink = _PgSink(settings.store) if settings.is_postgresql else _EmbeddedSink(settings)
    ids = IdGenerator(sink.node)
    tsv = tokens_out.open("w", encoding="utf-8") if tokens_out else None
    if tsv:
        tsv.write("id\ttoken\taccess_code\tprescriber_rpps\tpatient_nir\n")
    start = time.perf_counter()
    done = 0
    # Two-stage pipeline: this thread builds a batch (Python, holds the GIL) while a worker
    # writes the previous one (the store releases the GIL in ``create``).
    writer = ThreadPoolExecutor(1, thread_name_prefix="ordonum-demo")
    pending: Future[None] | None = None

    try:
        while done < count:
            n = min(BATCH, count - done)
            now = int(time.time() * 1000)
            pairs: list[tuple[str, str]] = []
            records: list[dict[str, Any]] = []
            rows = []
            # Draw the batch's random choices in bulk (rng.choices): per-item rng.choice
            # calls were a third of the loader's time.
            line_counts = rng.choices((1, 1, 2, 2, 3, 4), k=n)
            total = sum(line_counts)
            drawn = zip(
                rng.choices(packs, k=total),
                rng.choices(DOSAGES, k=total),
                rng.choices((1, 1, 2, 3, 6), k=total),
                rng.choices((0, 0, 0, 1, 2), k=total),
                rng.choices((True,) * 9 + (False,), k=total),
                strict=True,
            )
            people = zip(
                rng.choices(prescribers, k=n),
                rng.choices(patients, k=n),
                rng.choices(GIVEN, k=n),
                rng.choices(NAMES, k=n),
                rng.choices(range(1, 29), k=n),
                rng.choices((True,) * 4 + (False,), k=n),
                rng.choices((180, 365), k=n),
                line_counts,
                strict=True,
            )
            for rx_id, (prescriber, patient, given, name, day, consent, days, count_) in zip(
                ids.new_batch(n), people, strict=True
            ):
                token = issue_token(key, rx_id)
                lines: list[dict[str, Any]] = []
                renewable = False
                for _ in range(count_):
                    (cip13, label), dosage, quantity, renewals, substitutable = next(drawn)
                    renewable = renewable or renewals > 0
                    lines.append(
                        {
                            "label": label,
                            "cip13": cip13,
                            "dosage": dosage,
                            "quantity": quantity,
                            "renewals": renewals,
                            "substitutable": substitutable,
                        }
                    )
                record = {
                    "id": rx_id,
                    "prescriber_rpps": prescriber,
                    "patient": {
                        "nir": patient,
                        "name": f"{given} {name}",
                        "birth_date": f"19{patient[1:3]}-{patient[3:5]}-{day:02d}",
                    },
                    # the store allows 3 months, 12 for a renewable prescription
                    "valid_until_ms": now + (days if renewable else 90) * DAY_MS,
                    "lines": lines,
                    "prescriber_may_view_dispensations": consent,
                    "access_code": token.access_code,
                }
                records.append(record)
                pairs.append((rx_id, token.text))
                if tsv:
                    rows.append(
                        f"{rx_id}\t{token.text}\t{token.access_code}\t{prescriber}\t{patient}\n"
                    )
            if pending is not None:
                pending.result()
            pending = writer.submit(sink.write, records, now, pairs)
            if tsv:
                tsv.writelines(rows)
            done += n
            if progress:
                _progress(done, count, start, progress)
        if pending is not None:
            pending.result()
        writer.submit(sink.finish).result()
    finally:
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

    def write(
        self, records: list[dict[str, Any]], now_ms: int, pairs: list[tuple[str, str]]
    ) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _EmbeddedSink(_Sink):
    def __init__(self, settings: Settings) -> None:
        settings.store_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(settings.store_dir, sync="delay")
        try:
            self.vault = TokenVault(settings.data_dir / "qr-tokens.sqlite3")
        except BaseException:
            self.store.close()
            raise
        self.node = settings.node

    def write(
        self, records: list[dict[str, Any]], now_ms: int, pairs: list[tuple[str, str]]
    ) -> None:
        for record in records:
            self.store.create(orjson.dumps(record), now_ms=now_ms)
        self.vault.put_many(pairs)

    def finish(self) -> None:
        self.store.checkpoint()

    def close(self) -> None:
        self.vault.close()
        self.store.close()


class _PgSink(_Sink):
    """COPY into PostgreSQL from an event loop owned by the writer thread."""

    COLUMNS = (
        "id",
        "created_at_ms",
        "valid_until_ms",
        "code_digest",
        "prescriber_rpps",
        "patient_nir",
        "patient_name",
        "birth_date",
        "lines",
        "remaining",
        "consent",
    )

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

    def write(
        self, records: list[dict[str, Any]], now_ms: int, pairs: list[tuple[str, str]]
    ) -> None:
        from ordonum.service import pgmodel

        rows = []
        for record in records:
            rx = pgmodel.parse_record(record, now_ms)
            rows.append(
                (
                    rx.id,
                    rx.created_at_ms,
                    rx.valid_until_ms,
                    rx.code_digest,
                    rx.prescriber_rpps,
                    rx.patient_nir,
                    rx.patient_name,
                    rx.birth_date,
                    orjson.dumps([line.as_dict() for line in rx.lines]).decode(),
                    [line.allowance for line in rx.lines],
                    rx.consent,
                )
            )

        async def copy() -> None:
            async with self.conn.transaction():
                await self.conn.copy_records_to_table(
                    "prescriptions", records=rows, columns=self.COLUMNS
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
