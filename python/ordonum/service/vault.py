"""QR token texts of prescriptions created before the store kept them (read-only).

The service needs each prescription's QR token text to draw the same QR again (a prescriber
reprinting, a patient who lost the paper). The embedded store now keeps it with the
prescription (``qr_token`` in the creation record, journalled and fsynced with it: one
group commit per creation). Earlier versions kept the texts beside the store, in
``DATA/qr-tokens.sqlite3``, with a writer thread and an fsync of their own; a data directory
written by them still has that file, and this module reads it for the prescriptions whose
store record has no token. Nothing writes to it any more.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

__all__ = ["LEGACY_FILE", "TokenVault"]

LEGACY_FILE = "qr-tokens.sqlite3"


class TokenVault:
    """A read-only view of an earlier version's ``qr-tokens.sqlite3``."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()  # the connection

    @classmethod
    def open_if_present(cls, data_dir: Path | str) -> TokenVault | None:
        """The legacy file of ``data_dir``, or ``None`` if that directory never had one."""
        path = Path(data_dir) / LEGACY_FILE
        return cls(path) if path.exists() else None

    def get(self, rx_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT token FROM tokens WHERE id = ?", (rx_id,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
