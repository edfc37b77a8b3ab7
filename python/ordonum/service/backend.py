"""The one seam between the HTTP routes and where prescriptions live.

:class:`Backend` lists what the routes need, all ``async``; two implementations:

* :class:`EmbeddedBackend` (the default): the Rust :class:`ordonum.Store` in the data
  directory, one process; the QR token text is part of the store's creation record.
  Everything runs on the event loop: reads and scans directly (microseconds, the GIL
  released inside); creations and dispensations are checked and queued there and await
  their journal LSN through :class:`~ordonum.service.durable.DurableWaiter` (one wake-up per
  group commit, no thread per write). The sized thread pool is left for the rare writes:
  cancel, consent, a dispensation whose prescription has another write in flight, and reads
  of an earlier version's token file (:mod:`ordonum.service.vault`).
* :class:`ordonum.service.pg.PostgresBackend` (``--store postgresql://...``): PostgreSQL
  as the system of record, shared by any number of service processes.

Both take and return the same things: records as dicts (the store's contract, lines
numbered from 0 like the HTTP API), documents as JSON ``bytes`` of the same shape, and the
same exceptions (:class:`~ordonum.NotFound`, :class:`~ordonum.Conflict`,
:class:`~ordonum.InvalidRecord`, :class:`~ordonum.StoreFailed`), so the routes and the API
tests do not know which one is behind them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import orjson

from ordonum import NotFound, Store
from ordonum.service.durable import DONE, Durability, DurableWaiter
from ordonum.service.ratelimit import Lockout
from ordonum.service.vault import TokenVault

__all__ = ["Backend", "EmbeddedBackend"]

T = TypeVar("T")


class Backend(Protocol):
    """What the routes call. Times are Unix ms (``None``: now); IDs in any accepted form."""

    kind: str
    """``"embedded"`` or ``"postgresql"``."""
    node: int
    """The ID generator node this process issues IDs with."""

    async def create(self, record: dict[str, Any], token: str, *, now_ms: int) -> bytes:
        """Create durably (the prescription and its QR token text); its document."""
        ...

    async def create_start(self, record: dict[str, Any], token: str, *, now_ms: int) -> Durability:
        """Queue the creation (checked and refused as :meth:`create` does); the API answers
        once the returned :class:`~ordonum.service.durable.Durability` says it is durable."""
        ...

    async def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes: ...

    async def get_many(
        self, rx_ids: list[str], *, now_ms: int | None = None
    ) -> list[bytes | None]: ...

    async def scan(
        self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None
    ) -> bytes:
        """Check the code, log the access durably, return the document (NotFound on a
        wrong ID or code alike)."""
        ...

    async def dispense(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> bytes:
        """All lines or none; the answer once durable. Same key + same request: the first
        answer with ``"replayed": true``; same key, other request, or over-dispensing:
        Conflict."""
        ...

    async def dispense_start(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> tuple[bytes, Durability]:
        """:meth:`dispense`'s answer, and when the write is durable (the API answers then)."""
        ...

    async def cancel(
        self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None
    ) -> str: ...

    async def set_consent(
        self, rx_id: str, allowed: bool, *, now_ms: int | None = None
    ) -> None: ...

    async def owner(self, rx_id: str) -> tuple[str, str, bool]:
        """``(prescriber_rpps, patient_nir, consent)``."""
        ...

    async def dispensations(self, rx_id: str) -> bytes: ...

    async def by_patient(
        self, nir: str, *, limit: int = 50, before: str | None = None
    ) -> list[str]: ...

    async def access_log(self, rx_id: str) -> bytes: ...

    async def token(self, rx_id: str) -> str | None:
        """The prescription's QR token text, if this service created it."""
        ...

    async def count(self) -> int:
        """Prescriptions held (PostgreSQL: the planner's estimate)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for /metrics (cheap, no I/O)."""
        ...

    async def lockout_retry_after(self, key: str) -> int:
        """Manual entry of ``key`` (an ID text): 0 if open, else seconds until it reopens."""
        ...

    async def lockout_failed(self, key: str) -> None: ...

    async def lockout_succeeded(self, key: str) -> None: ...

    async def close(self) -> None: ...


class EmbeddedBackend:
    """The Rust store, in this process (see the module doc). ``legacy``: the token file of
    an earlier version's data directory, read for prescriptions created before the store
    kept their QR token text."""

    kind = "embedded"

    def __init__(
        self,
        store: Store,
        executor: ThreadPoolExecutor,
        lockout: Lockout,
        node: int,
        legacy: TokenVault | None = None,
    ) -> None:
        self.store = store
        self.legacy = legacy
        self.executor = executor
        self.lockout = lockout
        self.node = node
        self._waiter: DurableWaiter | None = None

    async def _blocking(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def _durable(self) -> DurableWaiter:
        """The journal waiter of the running loop (made on first use, remade if the loop
        changed: it reads the store's one wake fd, so there is only one)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter
        if waiter is None or waiter.loop is not loop:  # one waiter per store, on its loop
            if waiter is not None:
                waiter.close()
            waiter = self._waiter = DurableWaiter(self.store, loop)
        waiter.poll()  # answer the durable writes ripe by now
        return waiter

    async def create(self, record: dict[str, Any], token: str, *, now_ms: int) -> bytes:
        rx_id, durability = self._create_submit(record, token, now_ms)
        await durability.wait()
        return self.store.get(rx_id, now_ms=now_ms)

    async def create_start(self, record: dict[str, Any], token: str, *, now_ms: int) -> Durability:
        return self._create_submit(record, token, now_ms)[1]

    def _create_submit(
        self, record: dict[str, Any], token: str, now_ms: int
    ) -> tuple[str, Durability]:
        # The token text goes into the store's record (one journal record, one fsync):
        # checked and queued here, awaited through the journal's wake-ups (no worker thread).
        # The waiter first: it listens on the wake-up fd before the write is queued, so a
        # journal failure after the submit always reaches it.
        durable = self._durable()
        rx_id, lsn = self.store.create_submit(
            orjson.dumps({**record, "qr_token": token}), now_ms=now_ms
        )
        return rx_id, Durability(durable, lsn)

    async def get(self, rx_id: str, *, now_ms: int | None = None) -> bytes:
        return self.store.get(rx_id, now_ms=now_ms)

    async def get_many(self, rx_ids: list[str], *, now_ms: int | None = None) -> list[bytes | None]:
        return self.store.get_many(rx_ids, now_ms=now_ms)

    async def scan(
        self, rx_id: str, access_code: str, *, actor: str, now_ms: int | None = None
    ) -> bytes:
        # On the event loop: the store logs the access without waiting for the journal's
        # fdatasync (see Store.scan) and costs microseconds, the GIL released inside.
        waiter = self._waiter
        if waiter is not None and waiter.loop is asyncio.get_running_loop():
            waiter.poll()  # answer the durable writes ripe by now (see DurableWaiter)
        return self.store.scan(rx_id, access_code, actor=actor, now_ms=now_ms)

    async def dispense(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> bytes:
        answer, durability = await self.dispense_start(
            rx_id, record, idempotency_key=idempotency_key, access_code=access_code, now_ms=now_ms
        )
        await durability.wait()
        return answer

    async def dispense_start(
        self,
        rx_id: str,
        record: dict[str, Any],
        *,
        idempotency_key: str,
        access_code: str,
        now_ms: int | None = None,
    ) -> tuple[bytes, Durability]:
        body = orjson.dumps(record)
        durable = self._durable()  # before the submit, as in create
        submitted = self.store.dispense_submit(
            rx_id, body, idempotency_key=idempotency_key, access_code=access_code, now_ms=now_ms
        )
        if submitted is None:  # another write of it in flight: wait for its turn in a thread
            answer = await self._blocking(
                self.store.dispense,
                rx_id,
                body,
                idempotency_key=idempotency_key,
                access_code=access_code,
                now_ms=now_ms,
            )
            return answer, DONE
        answer, lsn = submitted
        return answer, Durability(durable, lsn)

    async def cancel(self, rx_id: str, *, prescriber_rpps: str, now_ms: int | None = None) -> str:
        return await self._blocking(
            self.store.cancel, rx_id, prescriber_rpps=prescriber_rpps, now_ms=now_ms
        )

    async def set_consent(self, rx_id: str, allowed: bool, *, now_ms: int | None = None) -> None:
        await self._blocking(self.store.set_consent, rx_id, allowed, now_ms=now_ms)

    async def owner(self, rx_id: str) -> tuple[str, str, bool]:
        return self.store.owner(rx_id)

    async def dispensations(self, rx_id: str) -> bytes:
        return self.store.dispensations(rx_id)

    async def by_patient(
        self, nir: str, *, limit: int = 50, before: str | None = None
    ) -> list[str]:
        return self.store.by_patient(nir, limit=limit, before=before)

    async def access_log(self, rx_id: str) -> bytes:
        return self.store.access_log(rx_id)

    async def token(self, rx_id: str) -> str | None:
        try:
            text = self.store.qr_token(rx_id)
        except NotFound:
            return None
        if text is None and self.legacy is not None:
            return await self._blocking(self.legacy.get, rx_id)
        return text

    async def count(self) -> int:
        return len(self.store)

    def stats(self) -> dict[str, int]:
        return self.store.stats()

    async def lockout_retry_after(self, key: str) -> int:
        return self.lockout.retry_after(key)

    async def lockout_failed(self, key: str) -> None:
        self.lockout.failed(key)

    async def lockout_succeeded(self, key: str) -> None:
        self.lockout.succeeded(key)

    async def close(self) -> None:
        self.executor.shutdown(wait=True)
        if self.legacy is not None:
            self.legacy.close()
        self.store.close()
        if self._waiter is not None:  # everything is durable now: settles what is left
            self._waiter.close()
