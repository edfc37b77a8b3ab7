"""Recovery time of the store at any size: ``python bench/store_recovery.py N [DIR]``.

Builds a journal of N creations (one patient each, 16 writer threads, ``sync="delay"``),
times ``Store.open`` replaying it, checkpoints, and times ``Store.open`` from the snapshot.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import build_journal
from ordonum import Store


def main() -> None:
    n = int(sys.argv[1])
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent / "results"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="recovery-") as d:
        t = time.perf_counter()
        build_journal(Path(d), n)
        print(f"built {n:,} creations in {time.perf_counter() - t:.1f} s")
        for source in ("journal", "snapshot"):
            t = time.perf_counter()
            s = Store.open(d)
            elapsed = time.perf_counter() - t
            assert len(s) == n
            print(f"| recovery of {n:,} records from the {source} | {elapsed:.2f} s |")
            if source == "journal":
                s.checkpoint()
            s.close()


if __name__ == "__main__":
    main()
