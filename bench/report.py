"""Turn a pytest-benchmark JSON file into one Markdown table per benchmark group.

    python bench/report.py bench/results/latest.json bench/results/latest.md

In each group the row whose name contains "ordonum" is the reference (the fastest one if
several); every row gets its median, calls per second, items per second when the benchmark
recorded ``benchmark.extra_info["items"]`` (batch calls), and its median divided by the
reference's ("x 12.5" = 12.5 times slower than ordonum; "x 0.8" = faster). Works for any
bench_*.py that follows those two conventions. Prints the tables and writes them to the
Markdown file.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_rate(per_second: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {unit}"
    return f"{per_second:.3g}"


def header(data: dict[str, Any]) -> list[str]:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    model = cpu.get("brand_raw") or machine.get("processor") or "unknown CPU"
    cores = cpu.get("count")
    python = (
        f"{machine.get('python_implementation', 'Python')} {machine.get('python_version', '?')}"
    )
    when = str(data.get("datetime", "unknown date"))[:19].replace("T", " ")
    cores_text = f", {cores} cores" if cores else ""
    return [
        "# Benchmarks",
        "",
        f"{when} UTC · {model}{cores_text} · {python} · {machine.get('system', '')} "
        f"{machine.get('release', '')}".rstrip(),
        "",
        "Median per call; ratio = median / median of the ordonum row of the group "
        "(above 1: slower than ordonum).",
    ]


def table(name: str, rows: list[dict[str, Any]]) -> list[str]:
    rows = sorted(rows, key=lambda b: ("ordonum" not in b["name"], b["stats"]["median"]))
    refs = [b for b in rows if "ordonum" in b["name"]]
    ref = min((b["stats"]["median"] for b in refs), default=None)
    items = any("items" in b.get("extra_info", {}) for b in rows)
    cols = ["name", "median", "calls/s"] + (["items/s"] if items else []) + ["ratio"]
    out = [f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for b in rows:
        median = b["stats"]["median"]
        cells = [f"`{b['name']}`", fmt_time(median), fmt_rate(1 / median)]
        if items:
            n = b.get("extra_info", {}).get("items")
            cells.append(fmt_rate(n / median) if n else "")
        cells.append(f"x {median / ref:.3g}" if ref else "n/a (no ordonum row)")
        out.append("| " + " | ".join(cells) + " |")
    return out


def report(data: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in data.get("benchmarks", []):
        groups[b.get("group") or b["name"]].append(b)
    lines = header(data)
    for name in sorted(groups):
        lines += ["", *table(name, groups[name])]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    text = report(json.loads(Path(argv[1]).read_text(encoding="utf-8")))
    Path(argv[2]).write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
