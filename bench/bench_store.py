"""The prescription store against the obvious Python baselines.

* ``store-get``: ``Store.get`` by ID vs ``dict.get`` on a dict of the same IDs -> the same
  JSON bytes, each round with fresh key objects (no cached str hash), 1,000 lookups a round.
* ``store-memory``: resident memory of the store vs the dict (extra_info; printed table).
* ``store-durable-writes``: durable dispensations with 1, 8 and 64 writer threads (group
  commit) vs a naive ``write`` + ``fdatasync`` per record loop, 2,000 records a round.
* ``store-recovery``: ``Store.open`` replaying a journal of N creations, and from a snapshot.
* ``store-bulk-create``: ``Store.create_many`` of 10,000 records vs a loop of ``create`` on
  the same kind of store (durable, ``sync="delay"`` as ``ordonum demo`` uses), a fresh store
  directory and fresh IDs each round.

Sizes: ``ORDONUM_BENCH_N`` prescriptions (default 10,000,000 with ``make bench``; 2,000 when
benchmarks run as smoke tests). ``bench/store_recovery.py`` times recovery at any size.
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ordonum import IdGenerator, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from store_helpers import CODE, NIR, T0, dispensation, record

LOOKUPS = 1_000
WRITES = 2_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_n(benchmark: Any) -> int:
    if benchmark.disabled:
        return 2_000
    return int(os.environ.get("ORDONUM_BENCH_N", "10000000"))


def template(gen: IdGenerator) -> tuple[str, str]:
    """A realistic record with a placeholder ID (two lines, renewals, accents)."""
    placeholder = gen.new()
    return record(
        placeholder, lines=[(30, 2), (1, 0)], valid_until_ms=T0 + 200 * 86_400_000
    ), placeholder


_CACHE: dict[int, tuple[Store, dict[str, bytes], list[str], dict[str, float]]] = {}


def big(n: int) -> tuple[Store, dict[str, bytes], list[str], dict[str, float]]:
    """A memory store and a dict of its documents, built once per size, with their RSS."""
    if n in _CACHE:
        return _CACHE[n]
    _CACHE.clear()
    gc.collect()
    gen = IdGenerator(9)
    tpl, placeholder = template(gen)
    ids = gen.new_batch(n)
    before = rss_bytes()
    store = Store.memory()
    for i, rx in enumerate(ids):
        # One patient per prescription (distinct NIRs), as in the national base.
        store.create(tpl.replace(placeholder, rx).replace(NIR, f"{i:015d}"), now_ms=T0)
    store_rss = rss_bytes() - before
    gc.collect()
    before = rss_bytes()
    table: dict[str, bytes] = {}
    for rx in ids:
        table[(rx + " ")[:-1]] = store.get(rx, now_ms=T0)
    dict_rss = rss_bytes() - before
    stats = store.stats()
    doc_len = sum(len(v) for v in list(table.values())[:1000]) / min(n, 1000)
    mem = {
        "n": n,
        "store_rss_per_record": store_rss / n,
        "store_content_per_record": stats["content_bytes"] / n,
        "store_overhead_per_record": (store_rss - stats["content_bytes"]) / n,
        "dict_rss_per_record": dict_rss / n,
        "json_doc_bytes": doc_len,
    }
    print(
        "\n| store memory, n = {n:,} | bytes per record |\n|---|---|\n"
        "| ordonum Store RSS | {store_rss_per_record:.0f} |\n"
        "| of which content bytes | {store_content_per_record:.0f} |\n"
        "| index overhead beyond content | {store_overhead_per_record:.0f} |\n"
        "| dict of JSON bytes RSS | {dict_rss_per_record:.0f} |\n"
        "| (JSON document length) | {json_doc_bytes:.0f} |".format(**mem)
    )
    _CACHE[n] = (store, table, ids, mem)
    return _CACHE[n]


def fresh_keys(ids: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    # New str objects: their hash is not cached yet, as for a key just read off a request.
    return [(k + " ")[:-1] for k in rng.choices(ids, k=LOOKUPS)]


@pytest.mark.benchmark(group="store-get")
def test_get_ordonum(benchmark: Any) -> None:
    store, _table, ids, mem = big(bench_n(benchmark))
    seeds = iter(range(10**9))

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        return (fresh_keys(ids, next(seeds)),), {}

    def run(keys: list[str]) -> None:
        get = store.get
        for k in keys:
            get(k)

    benchmark.pedantic(run, setup=setup, rounds=200 if not benchmark.disabled else 1)
    benchmark.extra_info.update({"per_call": f"1/{LOOKUPS} of the round", **mem})
    assert json.loads(store.get(ids[0], now_ms=T0))["id"] == ids[0]


@pytest.mark.benchmark(group="store-get")
def test_get_dict(benchmark: Any) -> None:
    _store, table, ids, mem = big(bench_n(benchmark))
    seeds = iter(range(10**9))

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        return (fresh_keys(ids, next(seeds)),), {}

    def run(keys: list[str]) -> None:
        get = table.get
        for k in keys:
            get(k)

    benchmark.pedantic(run, setup=setup, rounds=200 if not benchmark.disabled else 1)
    benchmark.extra_info.update({"per_call": f"1/{LOOKUPS} of the round", **mem})


@pytest.mark.benchmark(group="store-memory")
def test_memory_ordonum(benchmark: Any) -> None:
    """Times one more creation batch; the point is extra_info (RSS per record)."""
    store, _table, ids, mem = big(bench_n(benchmark))
    benchmark.extra_info.update(mem)
    assert mem["store_content_per_record"] > 0
    assert len(store) == len(ids)
    benchmark.pedantic(lambda: store.get_many(ids[:LOOKUPS], now_ms=T0), rounds=5)


# ---- durable writes -----------------------------------------------------------------------


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    # On the real disk (not a tmpfs), so that fdatasync costs what it costs.
    base = Path(__file__).resolve().parent / "results"
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="store-") as d:
        yield Path(d)


def durable_round(directory: Path, threads: int, writes: int) -> Callable[[], None]:
    gen = IdGenerator(11)
    store = Store.open(directory / f"s{threads}")
    ids = [gen.new() for _ in range(threads)]
    for rx in ids:
        store.create(record(rx, lines=[(9_999, 0)], valid_until_ms=T0 + 80 * 86_400_000), now_ms=T0)
    counter = iter(range(10**9))
    body = dispensation((0, 1))
    per_thread = writes // threads

    def one(rx: str, base: int) -> None:
        for i in range(per_thread):
            store.dispense(rx, body, idempotency_key=f"k{base}-{i}", access_code=CODE, now_ms=T0)

    def run() -> None:
        base = next(counter)
        ts = [threading.Thread(target=one, args=(rx, base)) for rx in ids]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    run.store = store  # type: ignore[attr-defined]
    return run


@pytest.mark.benchmark(group="store-durable-writes")
@pytest.mark.parametrize("threads", [1, 8, 64])
def test_durable_dispense_ordonum(benchmark: Any, disk_dir: Path, threads: int) -> None:
    writes = WRITES if not benchmark.disabled else 64
    run = durable_round(disk_dir, threads, writes)
    benchmark.pedantic(run, rounds=3 if not benchmark.disabled else 1)
    store: Store = run.store  # type: ignore[attr-defined]
    stats = store.stats()
    benchmark.extra_info.update(
        {
            "writes_per_round": writes,
            "writes_per_s": writes / benchmark.stats.stats.median if benchmark.stats else 0,
            "records_per_fsync": stats["records"] / max(stats["fsyncs"], 1),
        }
    )
    store.close()


@pytest.mark.benchmark(group="store-durable-writes")
def test_durable_naive_write_fdatasync_loop(benchmark: Any, disk_dir: Path) -> None:
    """The baseline: one write and one fdatasync per record, as a naive logger would."""
    writes = WRITES if not benchmark.disabled else 64
    payload = dispensation((0, 1)).encode() + b"\n"
    fd = os.open(disk_dir / "naive.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:

        def run() -> None:
            for _ in range(writes):
                os.write(fd, payload)
                os.fdatasync(fd)

        benchmark.pedantic(run, rounds=3 if not benchmark.disabled else 1)
        benchmark.extra_info.update(
            {
                "writes_per_round": writes,
                "writes_per_s": writes / benchmark.stats.stats.median if benchmark.stats else 0,
            }
        )
    finally:
        os.close(fd)


# ---- bulk creation ------------------------------------------------------------------------


def bulk_records(n: int, seed: int) -> list[str]:
    gen = IdGenerator(13)
    tpl, placeholder = template(gen)
    return [
        tpl.replace(placeholder, rx).replace(NIR, f"{seed:06d}{i:09d}")
        for i, rx in enumerate(gen.new_batch(n))
    ]


def bulk_round(
    disk_dir: Path, n: int, load: Callable[[Store, list[str]], None]
) -> tuple[Callable[[], tuple[tuple[Store, list[str]], dict[str, Any]]], Callable[..., None]]:
    """(setup, run): a fresh durable store and fresh records for each round."""
    rounds = iter(range(10**6))

    def setup() -> tuple[tuple[Store, list[str]], dict[str, Any]]:
        k = next(rounds)
        return (Store.open(disk_dir / f"bulk{k}", sync="delay"), bulk_records(n, k)), {}

    def run(store: Store, records: list[str]) -> None:
        load(store, records)
        assert len(store) == n
        store.close()

    return setup, run


@pytest.mark.benchmark(group="store-bulk-create")
def test_bulk_create_ordonum_create_many(benchmark: Any, disk_dir: Path) -> None:
    n = 10_000 if not benchmark.disabled else 200

    def many(store: Store, records: list[str]) -> None:
        store.create_many(records, now_ms=T0)

    setup, run = bulk_round(disk_dir, n, many)
    benchmark.pedantic(run, setup=setup, rounds=3 if not benchmark.disabled else 1)
    benchmark.extra_info["items"] = n


@pytest.mark.benchmark(group="store-bulk-create")
def test_bulk_create_loop_of_create(benchmark: Any, disk_dir: Path) -> None:
    n = 10_000 if not benchmark.disabled else 200

    def loop(store: Store, records: list[str]) -> None:
        for r in records:
            store.create(r, now_ms=T0)

    setup, run = bulk_round(disk_dir, n, loop)
    benchmark.pedantic(run, setup=setup, rounds=3 if not benchmark.disabled else 1)
    benchmark.extra_info["items"] = n


# ---- recovery -----------------------------------------------------------------------------


def build_journal(directory: Path, n: int) -> None:
    """n creations written by 16 threads with the delay policy (fast), then closed."""
    gen = IdGenerator(12)
    tpl, placeholder = template(gen)
    ids = gen.new_batch(n)
    with Store.open(directory, sync="delay", sync_delay_ms=20) as s:

        def part(k: int) -> None:
            for i in range(k, n, 16):
                body = tpl.replace(placeholder, ids[i]).replace(NIR, f"{i:015d}")
                s.create(body, now_ms=T0)

        ts = [threading.Thread(target=part, args=(k,)) for k in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()


def recovery_n(benchmark: Any) -> int:
    if benchmark.disabled:
        return 1_000
    return int(os.environ.get("ORDONUM_BENCH_RECOVERY_N", "1000000"))


@pytest.mark.benchmark(group="store-recovery")
@pytest.mark.parametrize("source", ["journal", "snapshot"])
def test_recovery_ordonum(benchmark: Any, disk_dir: Path, source: str) -> None:
    n = recovery_n(benchmark)
    build_journal(disk_dir, n)
    if source == "snapshot":
        with Store.open(disk_dir) as s:
            s.checkpoint()

    def run() -> None:
        s = Store.open(disk_dir)
        assert len(s) == n
        s.close()

    benchmark.pedantic(run, rounds=3 if not benchmark.disabled else 1)
    benchmark.extra_info.update({"records": n, "source": source})
