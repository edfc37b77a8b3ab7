"""Per-identity token buckets (429 + Retry-After) and the manual-entry lockout.

Both live in this process's memory: one service process owns its embedded store, so there is
no other process to share counts with. They only run on the event-loop thread, hence no
locks. Memory is bounded: when a table is full, entries that no longer matter (full buckets,
expired lockouts) are dropped first, then the oldest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["Lockout", "RateLimiter"]


class RateLimiter:
    """``rate`` requests per second per key, bursts of up to ``burst``."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        # key -> tokens left, key -> last refill time. Two dicts of floats rather than a
        # [tokens, time] list per key: a dict holding only floats is not tracked by the
        # cyclic garbage collector, whereas 10^4-10^5 long-lived lists were walked by every
        # young-generation collection (a pause for every request in flight).
        self._tokens: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else the seconds to wait."""
        now = self._clock()
        left = self._tokens.get(key)
        if left is None:
            if len(self._tokens) >= self._max_keys:
                self._prune(now)
            self._tokens[key] = self.burst - 1.0
            self._last[key] = now
            return 0.0
        tokens = min(self.burst, left + (now - self._last[key]) * self.rate)
        self._last[key] = now
        if tokens >= 1.0:
            self._tokens[key] = tokens - 1.0
            return 0.0
        self._tokens[key] = tokens
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        last = self._last
        full = [
            k
            for k, tokens in self._tokens.items()
            if tokens + (now - last[k]) * self.rate >= self.burst
        ]
        for k in full:
            del self._tokens[k], last[k]
        while len(self._tokens) >= self._max_keys:
            k = next(iter(self._tokens))
            del self._tokens[k], last[k]


class Lockout:
    """Locks manual entry (ID + typed access code) of one ID after a burst of wrong codes.

    ``failures`` wrong codes within ``window`` seconds lock the ID for ``seconds``. Counts are
    kept per ID text whether or not the ID exists, so the lockout says nothing about
    existence. Scanning the QR token is never locked: the lock is against guessing codes.
    """

    def __init__(
        self,
        failures: int,
        window: float,
        seconds: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window = window
        self.seconds = seconds
        self._max_keys = max_keys
        self._clock = clock
        self._failed: dict[str, list[float]] = {}  # id -> recent failure times
        self._locked: dict[str, float] = {}  # id -> locked until

    def retry_after(self, rx_id: str) -> int:
        """0 if manual entry of ``rx_id`` is open, else whole seconds until it reopens."""
        until = self._locked.get(rx_id)
        if until is None:
            return 0
        left = until - self._clock()
        if left <= 0:
            del self._locked[rx_id]
            return 0
        return max(1, math.ceil(left))

    def failed(self, rx_id: str) -> None:
        now = self._clock()
        times = self._failed.get(rx_id)
        if times is None:
            if len(self._failed) >= self._max_keys:
                self._prune(now)
            times = self._failed[rx_id] = []
        times.append(now)
        cutoff = now - self.window
        while times and times[0] < cutoff:
            times.pop(0)
        if len(times) >= self.failures:
            self._locked[rx_id] = now + self.seconds
            del self._failed[rx_id]
            if len(self._locked) > self._max_keys:
                for k in [k for k, t in self._locked.items() if t <= now]:
                    del self._locked[k]
                while len(self._locked) > self._max_keys:
                    del self._locked[next(iter(self._locked))]

    def succeeded(self, rx_id: str) -> None:
        self._failed.pop(rx_id, None)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        for k in [k for k, t in self._failed.items() if not t or t[-1] < cutoff]:
            del self._failed[k]
        while len(self._failed) >= self._max_keys:
            del self._failed[next(iter(self._failed))]
