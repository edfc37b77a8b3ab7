"""The national peak derivation reproduces the figures of the domain reference."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SIZING = Path(__file__).resolve().parents[1] / "bench" / "sizing.py"


@pytest.fixture(scope="module")
def sizing() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sizing", SIZING)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sizing"] = module
    spec.loader.exec_module(module)
    return module


def test_default_assumptions_give_the_national_burst_peak(sizing: ModuleType) -> None:
    table = {r.flow: r for r in sizing.rates(sizing.Assumptions())}
    assert round(table["scan lookups"].peak_hour_per_s) == 231
    assert round(table["scan lookups"].burst_per_s) == 462
    assert round(table["dispensation writes"].burst_per_s) == 617
    assert round(table["prescription creations"].burst_per_s) == 420
    assert round(table["total (mixed)"].burst_per_s, -1) == 1500


def test_assumptions_are_adjustable(sizing: ModuleType) -> None:
    base = sizing.rates(sizing.Assumptions())[-1].burst_per_s
    doubled = sizing.rates(sizing.Assumptions(burst=4.0))[-1].burst_per_s
    assert doubled == pytest.approx(2 * base)
    with_patients = sizing.rates(sizing.Assumptions(patient_reads_per_prescription=1.0))
    assert "patient reads" in {r.flow for r in with_patients}
