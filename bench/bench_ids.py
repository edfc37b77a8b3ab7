"""IDs: ordonum's generator and validator against the usual unique-ID makers.

`make bench` runs them for real; `make test` once each (smoke), with small batches.
Rows whose name contains "ordonum" are the reference of their group (bench/report.py).
"""

import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest
import ulid
import uuid_utils
from ordonum import IdGenerator, is_valid_id
from pytest_benchmark.fixture import BenchmarkFixture
from stdnum.iso7064 import mod_37_2

T = TypeVar("T")


def per_call(benchmark: BenchmarkFixture, func: Callable[..., T], *args: object) -> T:
    """Time `func(*args)` in rounds of 1,000 calls, so the ~100 ns of reading the timer is
    not counted in a sub-microsecond call (pytest-benchmark's calibration picks 1 here)."""
    iterations = 1 if benchmark.disabled else 1_000
    return benchmark.pedantic(func, args=args, rounds=100, iterations=iterations, warmup_rounds=1)


GEN = IdGenerator(1234)
BATCH = 1_000_000


def batch_size(benchmark: BenchmarkFixture) -> int:
    n = 1_000 if benchmark.disabled else BATCH
    benchmark.extra_info["items"] = n
    return n


@pytest.mark.benchmark(group="id: one new ID as str")
def test_ordonum_new(benchmark: BenchmarkFixture) -> None:
    assert len(per_call(benchmark, GEN.new)) == 21


@pytest.mark.benchmark(group="id: one new ID as str")
def test_uuid_utils_uuid7(benchmark: BenchmarkFixture) -> None:
    assert len(per_call(benchmark, lambda: str(uuid_utils.uuid7()))) == 36


@pytest.mark.benchmark(group="id: one new ID as str")
def test_uuid4(benchmark: BenchmarkFixture) -> None:
    assert len(per_call(benchmark, lambda: str(uuid.uuid4()))) == 36


@pytest.mark.benchmark(group="id: one new ID as str")
def test_python_ulid(benchmark: BenchmarkFixture) -> None:
    assert len(per_call(benchmark, lambda: str(ulid.ULID()))) == 26


def run_batch(benchmark: BenchmarkFixture, make: object) -> list[str]:
    n = batch_size(benchmark)
    assert callable(make)
    out: list[str] = benchmark.pedantic(make, args=(n,), rounds=5, iterations=1)
    return out


@pytest.mark.benchmark(group="id: 1,000,000 new IDs as str")
def test_ordonum_new_batch(benchmark: BenchmarkFixture) -> None:
    assert len(run_batch(benchmark, GEN.new_batch)) == batch_size(benchmark)


@pytest.mark.benchmark(group="id: 1,000,000 new IDs as str")
def test_uuid_utils_uuid7_loop(benchmark: BenchmarkFixture) -> None:
    out = run_batch(benchmark, lambda n: [str(uuid_utils.uuid7()) for _ in range(n)])
    assert len(out) == batch_size(benchmark)


@pytest.mark.benchmark(group="id: 1,000,000 new IDs as str")
def test_uuid4_loop(benchmark: BenchmarkFixture) -> None:
    out = run_batch(benchmark, lambda n: [str(uuid.uuid4()) for _ in range(n)])
    assert len(out) == batch_size(benchmark)


@pytest.mark.benchmark(group="id: 1,000,000 new IDs as str")
def test_python_ulid_loop(benchmark: BenchmarkFixture) -> None:
    out = run_batch(benchmark, lambda n: [str(ulid.ULID()) for _ in range(n)])
    assert len(out) == batch_size(benchmark)


ID_TEXT = GEN.new()
ID_COMPACT = ID_TEXT.replace("-", "")


@pytest.mark.benchmark(group="id: validate one ID")
def test_ordonum_is_valid_id(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, is_valid_id, ID_TEXT) is True


@pytest.mark.benchmark(group="id: validate one ID")
def test_stdnum_mod_37_2_is_valid(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, mod_37_2.is_valid, ID_COMPACT) is True
