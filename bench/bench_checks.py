"""Health identifier validation: ordonum.checks against python-stdnum.

stdnum has no RPPS validator: its Luhn check on the same 11 digits is the peer.
"""

import random
from collections.abc import Callable
from typing import TypeVar

import pytest
from ordonum import checks
from pytest_benchmark.fixture import BenchmarkFixture
from stdnum import ean, luhn
from stdnum.fr import nir

T = TypeVar("T")


def per_call(benchmark: BenchmarkFixture, func: Callable[..., T], *args: object) -> T:
    """Time `func(*args)` in rounds of 1,000 calls, so the ~100 ns of reading the timer is
    not counted in a sub-microsecond call (pytest-benchmark's calibration picks 1 here)."""
    iterations = 1 if benchmark.disabled else 1_000
    return benchmark.pedantic(func, args=args, rounds=100, iterations=iterations, warmup_rounds=1)


NIR = "295109912611193"
RPPS = "10000000009"
CIP13 = "3400949497294"


@pytest.mark.benchmark(group="check: NIR")
def test_ordonum_is_valid_nir(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, checks.is_valid_nir, NIR) is True


@pytest.mark.benchmark(group="check: NIR")
def test_stdnum_nir_is_valid(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, nir.is_valid, NIR) is True


@pytest.mark.benchmark(group="check: RPPS")
def test_ordonum_is_valid_rpps(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, checks.is_valid_rpps, RPPS) is True


@pytest.mark.benchmark(group="check: RPPS")
def test_stdnum_luhn_is_valid(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, luhn.is_valid, RPPS) is True


@pytest.mark.benchmark(group="check: CIP13")
def test_ordonum_is_valid_cip13(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, checks.is_valid_cip13, CIP13) is True


@pytest.mark.benchmark(group="check: CIP13")
def test_stdnum_ean_is_valid(benchmark: BenchmarkFixture) -> None:
    assert per_call(benchmark, ean.is_valid, CIP13) is True


def nirs(benchmark: BenchmarkFixture) -> list[str]:
    n = 100 if benchmark.disabled else 10_000
    benchmark.extra_info["items"] = n
    rng = random.Random(7)
    out = []
    for _ in range(n):
        body = "".join(rng.choices("0123456789", k=13))
        out.append(body + nir.calc_check_digits(body))
    return out


@pytest.mark.benchmark(group="check: 10,000 NIRs")
def test_ordonum_are_valid_nir(benchmark: BenchmarkFixture) -> None:
    texts = nirs(benchmark)
    assert all(benchmark(checks.are_valid_nir, texts))


@pytest.mark.benchmark(group="check: 10,000 NIRs")
def test_stdnum_nir_is_valid_loop(benchmark: BenchmarkFixture) -> None:
    texts = nirs(benchmark)
    assert all(benchmark(lambda: [nir.is_valid(t) for t in texts]))
