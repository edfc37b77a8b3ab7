"""Child process of the crash tests: dispenses until killed, printing each step.

Usage: ``store_crash_child.py DIR CYCLE SYNC RX_ID...``. Writes ``R`` once the store is
open, then from 4 threads ``S <key>`` before each dispensation is sent and
``A <rx> <dispensation_id> <at_ms> <key>`` once it is acknowledged. Each line is one
``write`` to the pipe, so a SIGKILL never leaves half a line. Every dispensation's time
encodes its key (``at_ms = base + thread * 100_000 + n``), so the parent can map what it
finds after recovery back to what was sent. A fifth thread scans: ``Q <actor>`` before each
scan, ``V <rx> <actor>`` once it returned (scans do not wait for the journal).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

from ordonum import Store
from store_helpers import CODE, T0, dispensation


def main() -> None:
    directory, cycle, sync, *ids = sys.argv[1:]
    store = Store.open(directory, sync=sync, sync_delay_ms=3)
    os.write(1, b"R\n")
    base = T0 + int(cycle) * 1_000_000

    def run(t: int) -> None:
        rng = random.Random(f"{cycle}-{t}")
        for n in range(100_000):
            rx = rng.choice(ids)
            at = base + t * 100_000 + n
            key = f"c{cycle}t{t}n{n}"
            os.write(1, f"S {key}\n".encode())
            answer = json.loads(
                store.dispense(
                    rx, dispensation((0, 1)), idempotency_key=key, access_code=CODE, now_ms=at
                )
            )
            os.write(1, f"A {rx} {answer['dispensation_id']} {at} {key}\n".encode())
            if t == 0 and n % 97 == 96:
                store.checkpoint()

    def scan() -> None:
        rng = random.Random(f"{cycle}-scan")
        for n in range(100_000):
            rx = rng.choice(ids)
            actor = f"c{cycle}s{n}"
            os.write(1, f"Q {actor}\n".encode())
            store.scan(rx, CODE, actor=actor, now_ms=base + n)
            os.write(1, f"V {rx} {actor}\n".encode())
            time.sleep(0.0005)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    threads.append(threading.Thread(target=scan))
    for th in threads:
        th.start()
    for th in threads:
        th.join()


if __name__ == "__main__":
    main()
