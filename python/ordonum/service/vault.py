"""Where the service keeps each prescription's QR token text, to draw its QR again.

The store deliberately keeps only a digest of the access code, but a prescriber reprinting
a prescription, or a patient who lost the paper, needs the very same QR (the token carries
the code). So the service keeps the token texts beside the store, in SQLite (standard
library; WAL, ``synchronous=FULL``: a token is on disk before the prescription is created,
hence before the creation is acknowledged). ``DATA/qr-tokens.sqlite3`` is as sensitive as
the printed QR codes: mode 0600.

Weak point, on purpose for now: the texts are not encrypted at rest.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = ["TokenVault"]


class TokenVault:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:" and not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, token TEXT NOT NULL)"
            )

    def put(self, rx_id: str, token: str) -> None:
        """Keep ``token`` for ``rx_id`` durably (blocks on fsync: call from a worker thread)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?)", (rx_id, token))

    def put_many(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Many at once, in one transaction (bulk loads)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?)", pairs)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, rx_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT token FROM tokens WHERE id = ?", (rx_id,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
