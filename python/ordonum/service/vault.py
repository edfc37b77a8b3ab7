"""Where the service keeps each prescription's QR token text, to draw its QR again.

The store deliberately keeps only a digest of the access code, but a prescriber reprinting
a prescription, or a patient who lost the paper, needs the very same QR (the token carries
the code). So the service keeps the token texts beside the store, in SQLite (standard
library; WAL, ``synchronous=FULL``: a token is on disk before the prescription is created,
hence before the creation is acknowledged). ``DATA/qr-tokens.sqlite3`` is as sensitive as
the printed QR codes: mode 0600.

Writes are group-committed, like the store's journal: one writer thread takes every row
waiting, writes them in one transaction (one fsync), then wakes their callers. Creations
from many prescribers therefore share fsyncs instead of queueing for one each (a lock held
across an fsync capped the whole service at ~1 / fsync latency creations per second).
:meth:`TokenVault.put` blocks until its row is durable; :meth:`TokenVault.put_async` is the
same for the event loop, which it wakes once per batch, not once per row.

Weak point, on purpose for now: the texts are not encrypted at rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path

from ordonum import StoreFailed

__all__ = ["TokenVault", "VaultClosed"]

_INSERT = "INSERT OR REPLACE INTO tokens VALUES (?, ?)"


class VaultClosed(StoreFailed):
    """The vault was closed, or its writer failed: nothing more is written (a
    :class:`ordonum.StoreFailed`, so the service answers 503 like for the store)."""


class _Pending:
    """Rows waiting for the writer, and who waits for them."""

    __slots__ = ("async_waiters", "rows", "sync_waiters")

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []
        self.sync_waiters: list[Future[None]] = []
        self.async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


class TokenVault:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:" and not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # the connection
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, token TEXT NOT NULL)"
            )
        self._cond = threading.Condition()  # _pending, _closed, _error
        self._pending = _Pending()
        self._closed = False
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="ordonum-vault", daemon=True)
        self._writer.start()

    def put(self, rx_id: str, token: str) -> None:
        """Keep ``token`` for ``rx_id``; returns once it is on disk (blocks: worker threads)."""
        done: Future[None] = Future()
        with self._cond:
            self._enqueue(rx_id, token)
            self._pending.sync_waiters.append(done)
        done.result()

    def put_async(self, rx_id: str, token: str) -> asyncio.Future[None]:
        """:meth:`put` for the running event loop: a future done once the row is on disk."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._enqueue(rx_id, token)
            self._pending.async_waiters.append((loop, done))
        return done

    def _enqueue(self, rx_id: str, token: str) -> None:
        if self._error is not None:
            raise VaultClosed(
                f"the QR token vault refuses writes after a failed write: {self._error}"
            )
        if self._closed:
            raise VaultClosed("the QR token vault is closed")
        self._pending.rows.append((rx_id, token))
        self._cond.notify()

    def put_many(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Many at once, in one transaction of their own (bulk loads)."""
        with self._lock:
            self._transaction(pairs)

    def _transaction(self, rows: Iterable[tuple[str, str]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(_INSERT, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending.rows and not self._closed:
                    self._cond.wait()
                batch, self._pending = self._pending, _Pending()
                if not batch.rows and self._closed:
                    return
            error: BaseException | None = None
            try:
                with self._lock:
                    self._transaction(batch.rows)
            except BaseException as exc:  # handed to every waiter
                error = exc
                with self._cond:
                    self._error = exc  # refuse later writes: the disk said no
                    # rows queued while this batch was being written fail with it
                    late, self._pending = self._pending, _Pending()
                batch.rows += late.rows
                batch.sync_waiters += late.sync_waiters
                batch.async_waiters += late.async_waiters
            self._settle_batch(batch, error)
            if error is not None:
                return

    @staticmethod
    def _settle_batch(batch: _Pending, error: BaseException | None) -> None:
        for fut in batch.sync_waiters:
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(VaultClosed(f"QR token vault write failed: {error}"))
        loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for loop, afut in batch.async_waiters:
            loops.setdefault(loop, []).append(afut)
        for loop, futs in loops.items():
            # one wake-up of the loop for the whole batch; a closed loop has no waiter left
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, futs, error)

    def get(self, rx_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT token FROM tokens WHERE id = ?", (rx_id,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Write what is pending, stop the writer, close the database."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._writer.join()
        with self._lock:
            self._db.close()


def _settle(futs: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in futs:
        if fut.done():  # its caller was cancelled; the row is written all the same
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(VaultClosed(f"QR token vault write failed: {error}"))
