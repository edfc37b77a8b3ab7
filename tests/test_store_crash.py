"""Crash safety: SIGKILL under write load, and a full disk.

The crash test runs ``ORDONUM_CRASH_CYCLES`` cycles (50 by default, ``make crash`` runs
more): a child process dispenses from 4 threads and prints every acknowledged
dispensation; the parent kills it with SIGKILL at a random moment, reopens the store and
checks that every acknowledged dispensation is there and identical, that nothing that was
never sent is there, and that no prescription moved backwards. Odd cycles use the
``delay`` policy, whose promise covers a killed process too (the bytes are in the page
cache); only a machine crash may lose its last few milliseconds.

A fifth thread scans. A scan does not wait for the journal, so a kill may lose the last
acknowledged scans, but only those: every scan acknowledged before an acknowledged
dispensation was sent has a lower LSN, so it must be there after recovery.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ordonum import IdGenerator, Store
from store_helpers import CODE, T0, dispensation, record

HERE = Path(__file__).resolve().parent
CHILD = HERE / "store_crash_child.py"
CYCLES = int(os.environ.get("ORDONUM_CRASH_CYCLES", "50"))
UNITS = 9_999


def dispensations_by_rx(store: Store, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {rx: json.loads(store.dispensations(rx))["dispensations"] for rx in ids}


def actors_by_rx(store: Store, ids: list[str]) -> dict[str, list[str]]:
    return {rx: [a["actor"] for a in json.loads(store.access_log(rx))["access_log"]] for rx in ids}


def at_ms(d: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(d["at"]).timestamp() * 1000)


def test_acknowledged_dispensations_survive_sigkill(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    gen = IdGenerator(5)
    ids = [gen.new() for _ in range(12)]
    with Store.open(directory) as s:
        for rx in ids:
            s.create(record(rx, lines=[(UNITS, 0)], valid_until_ms=T0 + 10**9), now_ms=T0)
    rng = random.Random(20250615)
    previous: dict[str, list[dict[str, Any]]] = {rx: [] for rx in ids}
    previous_scans: dict[str, list[str]] = {rx: [] for rx in ids}
    total_acked = 0
    total_scans_kept = 0
    deadline = time.monotonic() + 600
    for cycle in range(CYCLES):
        sync = "always" if cycle % 2 == 0 else "delay"
        with subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(cycle), sync, *ids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=HERE,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"R\n", proc.stderr.read() if proc.stderr else b""
            time.sleep(rng.uniform(0.0, 0.12))
            proc.send_signal(signal.SIGKILL)
            # Read through the same buffered reader as the ready line (it may hold more).
            out = proc.stdout.read()
            err = proc.stderr.read() if proc.stderr else b""
            proc.wait()
            assert proc.returncode == -signal.SIGKILL, err.decode()
        sent: set[str] = set()
        acked: dict[str, tuple[str, str, int]] = {}
        scans_sent: set[str] = set()
        # Scans acknowledged before the latest acknowledged dispensation was sent.
        scans_covered: set[str] = set()
        scans_so_far: list[str] = []
        sent_at: dict[str, int] = {}
        for line in out.decode().splitlines():
            kind, *rest = line.split()
            if kind == "S":
                sent.add(rest[0])
                sent_at[rest[0]] = len(scans_so_far)
            elif kind == "Q":
                scans_sent.add(rest[0])
            elif kind == "V":
                scans_so_far.append(rest[1])
            else:
                rx, did, at, key = rest
                acked[key] = (rx, did, int(at))
                scans_covered.update(scans_so_far[: sent_at[key]])
        total_acked += len(acked)
        with Store.open(directory) as s:
            now = dispensations_by_rx(s, ids)
            scans = actors_by_rx(s, ids)
            for rx in ids:
                doc = json.loads(s.get(rx, now_ms=T0))
                assert doc["lines"][0]["remaining"] == UNITS - len(now[rx])
            assert len(s) == len(ids)
        present: dict[int, tuple[str, str]] = {}
        for rx in ids:
            # Nothing moved backwards: the previous state is a prefix, identical.
            assert now[rx][: len(previous[rx])] == previous[rx], f"cycle {cycle}: {rx} went back"
            for d in now[rx][len(previous[rx]) :]:
                present[at_ms(d)] = (rx, d["dispensation_id"])
        base = T0 + cycle * 1_000_000
        new_keys = {
            f"c{cycle}t{(a - base) // 100_000}n{(a - base) % 100_000}": v
            for a, v in present.items()
        }
        assert set(new_keys) <= sent, f"cycle {cycle}: never-sent dispensation present"
        for key, (rx, did, _at) in acked.items():
            assert new_keys.get(key) == (rx, did), (
                f"cycle {cycle} ({sync}): acknowledged {key} lost"
            )
        kept: set[str] = set()
        for rx in ids:
            assert scans[rx][: len(previous_scans[rx])] == previous_scans[rx], f"cycle {cycle}"
            kept.update(scans[rx][len(previous_scans[rx]) :])
        assert kept <= scans_sent, f"cycle {cycle}: never-sent scan present"
        lost = scans_covered - kept
        assert not lost, f"cycle {cycle} ({sync}): scans before a durable write lost: {lost}"
        total_scans_kept += len(kept)
        previous, previous_scans = now, scans
        assert time.monotonic() < deadline
    assert total_acked > 0
    assert total_scans_kept > 0


DISK_FULL_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from store_helpers import CODE, dispensation, T0
    from ordonum import Store, StoreFailed

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    directory, *ids = sys.argv[1:]
    s = Store.open(directory)
    size = s.stats()["journal_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 3000, resource.RLIM_INFINITY))
    acked, failure = [], None
    for n in range(10_000):
        rx = ids[n % len(ids)]
        before = [s.get(r, now_ms=T0) for r in ids]
        try:
            s.dispense(rx, dispensation((0, 1)), idempotency_key=f"k{n}",
                       access_code=CODE, now_ms=T0)
        except StoreFailed as e:
            failure = {"key": f"k{n}", "errno": e.errno,
                       "message": str(e), "oserror": isinstance(e, OSError)}
            break
        acked.append(f"k{n}")
    after = [s.get(r, now_ms=T0) for r in ids]
    try:
        s.scan(ids[0], CODE, actor="x", now_ms=T0)
        refused = False
    except StoreFailed:
        refused = True
    print(json.dumps({"acked": acked, "failure": failure, "unchanged": after == before,
                      "refused_after": refused, "failed": s.stats()["failed"],
                      "reads": len(s.get_many(ids, now_ms=T0))}))
    """
)


def test_disk_full_fails_the_write_and_leaves_the_index_unchanged(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    gen = IdGenerator(6)
    ids = [gen.new() for _ in range(3)]
    with Store.open(directory) as s:
        for rx in ids:
            s.create(record(rx, lines=[(UNITS, 0)], valid_until_ms=T0 + 10**9), now_ms=T0)
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(directory), *ids],
        capture_output=True,
        cwd=HERE,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["failure"] is not None
    assert result["failure"]["oserror"] is True
    assert result["failure"]["errno"] == 27  # EFBIG: the file size limit
    assert result["failure"]["message"].startswith("[Errno 27] journal write failed on ")
    assert result["failure"]["message"].endswith("; the store refuses writes until it is reopened")
    assert result["unchanged"] is True
    assert result["refused_after"] is True
    assert result["failed"] == 1
    assert result["reads"] == 3
    assert len(result["acked"]) > 5
    # Reopened without the limit: every acknowledged dispensation is there, the failed one
    # (torn on disk) is not, and writing works again.
    with Store.open(directory) as s:
        stats = s.stats()
        assert stats["truncated_bytes"] > 0
        count = sum(len(json.loads(s.dispensations(rx))["dispensations"]) for rx in ids)
        assert count == len(result["acked"])
        answer = json.loads(
            s.dispense(
                ids[0], dispensation((0, 1)), idempotency_key="after", access_code=CODE, now_ms=T0
            )
        )
        assert answer["replayed"] is False
