"""National peak sizing for ordonum: request rates from explicit, adjustable assumptions.

Every number below is an assumption with its source in ../shared/reference/domain.md (copied
into bench/national_peak.md). Change one with a flag and the table follows::

    python bench/sizing.py                       # the defaults
    python bench/sizing.py --peak-hour-share 0.2 --burst 3
    python bench/sizing.py --json                # for the load test shape

Nothing here measures anything: it turns yearly national volumes into per-second rates.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Assumptions:
    pharmacy_prescriptions_per_year: float = 600e6  # CNAM: ~550-600 M go through pharmacies
    all_prescriptions_per_year: float = 750e6  # CNAM: ~750 M handled by the insurer
    scans_per_prescription: float = 1.5  # re-scans, staged dispensing
    writes_per_dispensation: float = 2.0  # execution record + billing record
    pharmacy_days_per_year: float = 300.0
    prescriber_days_per_year: float = 275.0
    peak_day_factor: float = 1.85  # gematik 2024: busiest day / average day
    peak_hour_share: float = 0.15  # share of a day's traffic in its busiest hour
    burst: float = 2.0  # short bursts over the peak-hour mean
    patient_reads_per_prescription: float = 0.0  # Mon espace santé look-ups (unknown: off)


@dataclass(frozen=True)
class Rates:
    flow: str
    peak_hour_per_s: float
    burst_per_s: float


def rates(a: Assumptions) -> list[Rates]:
    def per_second(per_year: float, days: float) -> float:
        return per_year / days * a.peak_day_factor * a.peak_hour_share / 3600

    flows = {
        "scan lookups": per_second(
            a.pharmacy_prescriptions_per_year * a.scans_per_prescription, a.pharmacy_days_per_year
        ),
        "dispensation writes": per_second(
            a.pharmacy_prescriptions_per_year * a.writes_per_dispensation,
            a.pharmacy_days_per_year,
        ),
        "prescription creations": per_second(
            a.all_prescriptions_per_year, a.prescriber_days_per_year
        ),
        "patient reads": per_second(
            a.all_prescriptions_per_year * a.patient_reads_per_prescription, 365.0
        ),
    }
    out = [Rates(name, r, r * a.burst) for name, r in flows.items() if r > 0]
    out.append(
        Rates(
            "total (mixed)",
            sum(r.peak_hour_per_s for r in out),
            sum(r.burst_per_s for r in out),
        )
    )
    return out


def markdown(a: Assumptions) -> str:
    lines = ["| flow | peak hour (req/s) | burst (req/s) | share of mix |", "|---|---:|---:|---:|"]
    table = rates(a)
    total = table[-1].burst_per_s
    for r in table:
        share = r.burst_per_s / total
        lines.append(
            f"| {r.flow} | {r.peak_hour_per_s:,.0f} | {r.burst_per_s:,.0f} | {share:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Assumptions()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=value)
    parser.add_argument("--json", action="store_true", help="print rates as JSON")
    args = vars(parser.parse_args(argv))
    as_json = args.pop("json")
    a = Assumptions(**args)
    if as_json:
        print(json.dumps([asdict(r) for r in rates(a)], indent=2))
    else:
        print(markdown(a))


if __name__ == "__main__":
    main()
